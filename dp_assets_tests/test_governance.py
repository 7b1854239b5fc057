"""Governance on a fully materialized world: the data dictionary covers every stored column, an
undescribed column fails its check, and no raw PII leaves the persistent landing. The assets that
read the catalog or the event log draw no edge from every asset, yet run after them in a run;
previews lead with the business columns; the erasure log exists before any erasure."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, AssetSelection

from dp_assets.metadata import PLATFORM_COLUMNS

pytestmark = pytest.mark.slow
DICTIONARY = AssetSelection.assets(["governance", "data_dictionary"])
# They read Dagster's catalog or event log, not the tables of the assets they describe.
CATALOG_READERS = {
    AssetKey(["governance", "data_dictionary"]),
    AssetKey(["monitoring", "pipeline_health"]),
}


def stored_columns(platform) -> set[tuple[str, str]]:
    rows = platform.sql(
        "SELECT schema_name || '.' || table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND NOT internal"
    )
    return set(rows)


def test_dictionary_describes_every_stored_column(world):
    platform, result = world
    dictionary = platform.frame("SELECT * FROM governance.data_dictionary")
    assert set(zip(dictionary["table_name"], dictionary["column_name"])) >= stored_columns(platform)
    assert dictionary["description"].null_count() == 0
    pseudonymized = dictionary.filter(pl.col("pii") == "pseudonymized")
    assert set(pseudonymized["column_name"]) == {
        "name_pseudonym",
        "email_pseudonym",
        "address_pseudonym",
    }
    formatted = dictionary.filter(pl.col("table_name") == "formatted.meters_vendor_a").row(
        0, named=True
    )
    assert (
        formatted["source_format"] == "csv" and formatted["upstream"] == "landing/meters_vendor_a"
    )
    document = (platform.settings.data_dir / "docs" / "data_dictionary.md").read_text()
    for table in dictionary["table_name"].unique():
        assert f"## `{table}`" in document
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }
    assert checks[("governance/data_dictionary", "every_column_described")] is True


def test_a_stored_column_without_description_fails_the_check(world):
    platform, _ = world
    with platform.warehouse.get_connection() as conn:
        conn.execute("ALTER TABLE exploitation.customers ADD COLUMN loyalty_note VARCHAR")
    try:
        result = platform.materialize(DICTIONARY)
        (check,) = [
            e
            for e in result.get_asset_check_evaluations()
            if e.check_name == "every_column_described"
        ]
        assert check.passed is False
        assert "loyalty_note" in check.metadata["columns"].value
    finally:
        with platform.warehouse.get_connection() as conn:
            conn.execute("ALTER TABLE exploitation.customers DROP COLUMN loyalty_note")
    result = platform.materialize(DICTIONARY)
    assert [
        e.passed
        for e in result.get_asset_check_evaluations()
        if e.check_name == "every_column_described"
    ] == [True]


def raw_pii(platform) -> set[str]:
    """Every way the sample data writes a person's name, email and address in the raw files."""
    people = json.loads(platform.settings.sample_manifest.read_text())["people"]
    values = set()
    for p in people:
        values |= {
            f"{p['first_name']} {p['last_name']}",
            f"{p['last_name'].upper()}, {p['first_name']}",
            p["email"],
            p["street"],
            p["street"].replace("ul. ", "ul."),
        }
    return values


def test_no_raw_pii_outside_the_persistent_landing(world):
    platform, _ = world
    secrets = raw_pii(platform)
    assert len(secrets) > 100

    # Every text value of every DuckDB table.
    for (table,) in platform.sql(
        "SELECT DISTINCT schema_name || '.' || table_name FROM duckdb_tables()"
    ):
        text = platform.frame(f"SELECT * FROM {table}").select(pl.col(pl.String)).write_csv()
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{table} holds raw PII: {leaked[:3]}"

    # Every file MLflow and Dagster wrote (tracking store, artifacts, models, event logs, compute
    # logs), and anything else in the data dir but the landing, the inbox, the quarantine (copies
    # of raw files, the same protection class) and the generator's ground truth.
    data = platform.settings.data_dir
    raw_places = {
        data / "landing",
        data / "inbox",
        data / "quarantine",
        platform.settings.sample_manifest,
    }
    home = Path(platform.instance.root_directory)
    files = [p for p in [*data.rglob("*"), *home.rglob("*")] if p.is_file()]
    files = [p for p in files if not any(p == r or r in p.parents for r in raw_places)]
    files = [p for p in files if p.suffix != ".duckdb"]  # scanned above, table by table
    assert any("mlartifacts" in p.parts for p in files) and any(
        p.name == "mlflow.db" for p in files
    )
    for path in files:
        content = path.read_bytes()
        leaked = [s for s in secrets if s.encode() in content]
        assert not leaked, f"{path} holds raw PII: {leaked[:3]}"


def test_column_lineage_names_real_upstream_columns(world):
    platform, result = world
    graph = platform.defs.resolve_asset_graph()
    declared = {
        key: {c.name for c in graph.get(key).metadata["dagster/column_schema"].columns}
        for key in graph.get_all_asset_keys()
        if "dagster/column_schema" in graph.get(key).metadata
    }
    lineages = {
        m.asset_key: m.materialization.metadata["dagster/column_lineage"].value
        for m in result.get_asset_materialization_events()
        if "dagster/column_lineage" in m.materialization.metadata
    }
    expected = {k for k in declared if k.path[0] == "exploitation" or k.path[-1] == "features"}
    assert set(lineages) == expected
    for key, lineage in lineages.items():
        # Every column but constants and the split is traced to columns upstream that exist.
        traced = set(lineage.deps_by_column)
        assert declared[key] - traced <= {"vendor", "split"}, key
        for column, deps in lineage.deps_by_column.items():
            assert column in declared[key]
            for dep in deps:
                assert dep.column_name in declared[dep.asset_key], (key, column, dep)
                assert dep.asset_key in graph.get(key).parent_keys, (key, dep.asset_key)


def test_catalog_readers_draw_no_edge_from_every_asset(world):
    platform, _ = world
    graph = platform.defs.resolve_asset_graph()
    for key in CATALOG_READERS:
        assert graph.get(key).parent_keys == set(), key
    # Nothing else gathers the whole graph either: the report reads what it shows (each formatted
    # source's outcomes, two steps per pipeline, three reporting tables), every other asset a few.
    report = graph.get(AssetKey(["reporting", "report"])).parent_keys
    pipelines = platform.settings.catalog().pipelines
    assert {k.path[0] for k in report} == {"formatted", "monitoring", "reporting", *pipelines}
    assert len(report) <= len(platform.settings.catalog().sources) + 2 * len(pipelines) + 3
    widest = max(
        len(graph.get(k).parent_keys)
        for k in graph.get_all_asset_keys()
        if k.path != ["reporting", "report"]
    )
    assert widest <= 8, widest


def test_catalog_readers_run_after_every_other_asset_of_the_run(world):
    platform, result = world
    order = [m.asset_key for m in result.get_asset_materialization_events()]
    # The report reads pipeline health: it follows the readers; every other asset comes before.
    readers = AssetSelection.assets(*CATALOG_READERS)
    after = readers.downstream().resolve(platform.defs.resolve_asset_graph())
    others = [i for i, key in enumerate(order) if key not in after]
    assert min(order.index(key) for key in CATALOG_READERS) > max(others)
    # So what they read is this run's: every materialized asset is in the health table.
    health = {
        row[0] for row in platform.sql("SELECT DISTINCT asset FROM monitoring.pipeline_health")
    }
    watched = {key.to_user_string() for key in order} - {k.to_user_string() for k in after}
    assert watched - health <= {"reporting/model_accuracy", "governance/erasure_log"}


def test_previews_lead_with_business_columns(world):
    _, result = world
    seen = 0
    for event in result.get_asset_materialization_events():
        preview = event.materialization.metadata.get("preview")
        if preview is None:
            continue
        header = [c.strip() for c in preview.value.splitlines()[0].strip("|").split("|")]
        platform_at = [i for i, c in enumerate(header) if c in PLATFORM_COLUMNS]
        if len(platform_at) < len(header):  # a table of platform columns only keeps its order
            assert platform_at == list(range(len(header) - len(platform_at), len(header))), (
                event.asset_key,
                header,
            )
        seen += bool(platform_at)
    assert seen >= 5  # formatted tables, rejects, the landing manifest, integrated views


def test_the_erasure_log_exists_before_any_erasure(world):
    platform, result = world
    (log,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key == AssetKey(["governance", "erasure_log"])
    ]
    assert log.materialization.metadata["dagster/row_count"].value == 0
    assert platform.sql("SELECT count(*) FROM governance.erasure_log") == [(0,)]
