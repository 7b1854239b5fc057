"""Governance on a fully materialized world: the data dictionary covers every stored column, an
undescribed column fails its check, and no raw PII leaves the persistent landing."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetSelection

pytestmark = pytest.mark.slow
DICTIONARY = AssetSelection.assets(["governance", "data_dictionary"])


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
