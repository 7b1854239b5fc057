"""SQL views of a project (``views/<name>.sql``) and reproducible exploitation tables.

The view tests put SQL files in a throw-away project folder and build them over a formatted table
written straight into a real DuckDB warehouse; the reproducibility test builds the sample
utility's backbone in two fresh data dirs and once more in place.
"""

from __future__ import annotations

import types

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, materialize

from dp_assets.exploitation.views import load_sql_view, parse_sql_view
from dp_assets.resources import Warehouse
from dp_assets_tests.conftest import BACKBONE

DAILY = """/*
description: Energy per probe and day
key: [probe, day]
columns:
  probe: {description: Probe id, pattern: "^P[0-9]+$"}
  day: Calendar day, UTC
  site: Site the probe is installed at
  kwh: {description: "Energy that day, kWh", min: 0}
  readings: {description: Readings summed, not_null: true}
checks:
  some_readings: readings >= 1
*/
SELECT p.probe, CAST(p.at AS DATE) AS day, s.site,
       CAST(sum(CAST(p.kwh AS DECIMAL(18, 6))) AS DOUBLE) AS kwh, count(*) AS readings
FROM formatted.probe p JOIN formatted.probe_sites s USING (probe)
GROUP BY ALL;
"""
PROBE = """
    CREATE SCHEMA IF NOT EXISTS formatted;
    CREATE OR REPLACE TABLE formatted.probe AS
    SELECT 'P' || (i % 7) AS probe, TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL 1 HOUR AS at,
           (i % 13) * 0.1 AS kwh
    FROM range(24 * 20) t(i);
    CREATE OR REPLACE TABLE formatted.probe_sites AS
    SELECT DISTINCT probe, 'site ' || probe AS site FROM formatted.probe;
"""
PROJECT = types.SimpleNamespace(name="throwaway", owner="team:probes")


@pytest.fixture
def project(tmp_path):
    """A project folder with one view over generated formatted tables, and its warehouse."""
    (tmp_path / "project" / "views").mkdir(parents=True)
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
    with warehouse.get_connection() as conn:
        conn.execute(PROBE)
    return tmp_path / "project", warehouse


def build(folder, warehouse, name: str, text: str, instance: DagsterInstance):
    path = folder / "views" / f"{name}.sql"
    path.write_text(text)
    return materialize(
        load_sql_view(path, PROJECT),
        resources={"warehouse": warehouse},
        instance=instance,
        raise_on_error=False,
    )


def check_evaluations(result) -> list:
    return [
        e.event_specific_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    ]


def test_declaration_and_inferred_inputs(project):
    folder, _ = project
    path = folder / "views" / "daily.sql"
    path.write_text(DAILY)
    view = parse_sql_view(path)
    assert view.inputs == ("formatted.probe", "formatted.probe_sites")  # read through USING
    assert view.key == ("probe", "day") and view.checks == {"some_readings": "readings >= 1"}
    (asset,) = load_sql_view(path, PROJECT)
    spec = next(iter(asset.specs))
    assert spec.key == AssetKey(["exploitation", "daily"]) and spec.owners == ["team:probes"]
    assert {d.asset_key for d in spec.deps} == {
        AssetKey(["formatted", "probe"]),
        AssetKey(["formatted", "probe_sites"]),
    }
    described = {c.name: c.description for c in spec.metadata["dagster/column_schema"].columns}
    assert described["kwh"] == "Energy that day, kWh"
    (path.parent / "bad.sql").write_text("/*\nkey: [nope]\n*/\nSELECT 1 AS one")
    with pytest.raises(ValueError, match="bad.sql: key columns not declared"):
        parse_sql_view(path.parent / "bad.sql")


def test_view_builds_then_a_duplicate_key_fails_and_keeps_the_previous_state(project):
    folder, warehouse = project
    with DagsterInstance.ephemeral() as instance:
        first = build(folder, warehouse, "daily", DAILY, instance)
        assert first.success
        (materialization,) = first.asset_materializations_for_node("exploitation_daily")
        assert materialization.metadata["dagster/row_count"].value == 7 * 20
        columns = materialization.metadata["dagster/column_schema"].schema.columns
        assert [(c.name, c.type) for c in columns][:2] == [("probe", "VARCHAR"), ("day", "DATE")]
        assert all(check.passed for check in check_evaluations(first))
        before = warehouse.query("SELECT * FROM exploitation.daily")
        assert before.equals(before.sort("probe", "day"))  # stored in key order

        # A second site of one probe: two rows per (probe, day) key.
        with warehouse.get_connection() as conn:
            conn.execute("INSERT INTO formatted.probe_sites VALUES ('P3', 'elsewhere')")
        second = build(folder, warehouse, "daily", DAILY, instance)
        assert not second.success
        (failed,) = check_evaluations(second)
        assert not failed.passed and failed.check_name == "schema"
        assert "unique (key)" in failed.description and "P3" in failed.description
        failure = next(
            e for e in second.all_events if e.event_type == DagsterEventType.STEP_FAILURE
        )
        assert "rolled back, previous state kept" in failure.event_specific_data.error.message
        assert warehouse.query("SELECT * FROM exploitation.daily").equals(before)

        # A declared rule other than the key fails the same way, naming the rule and its rows.
        with warehouse.get_connection() as conn:
            conn.execute(PROBE.split(";")[-2])  # one site per probe again
            conn.execute("UPDATE formatted.probe SET kwh = -1 WHERE probe = 'P1'")
        third = build(folder, warehouse, "daily", DAILY, instance)
        (failed,) = check_evaluations(third)
        assert not third.success and failed.description.startswith(
            "1 failing checks, first: kwh min 0"
        )
        assert warehouse.query("SELECT * FROM exploitation.daily").equals(before)


def test_rules_with_over_in_their_values_or_window_checks(project):
    """A rule's SQL holding the letters OVER (an accepted value) or a window function (a
    declared check) is evaluated, not mistaken for the other kind."""
    folder, warehouse = project
    view = DAILY.replace(
        "  site: Site the probe is installed at",
        "  site: {description: Site, accepted_values: [OVERCAST, 'site P0']}",
    ).replace("  some_readings: readings >= 1", "  some_readings: readings >= 1\n"
              "  near_mean: readings <= 2 * avg(readings) OVER ()")  # fmt: skip
    with DagsterInstance.ephemeral() as instance:
        result = build(folder, warehouse, "daily", view, instance)
    (failed,) = check_evaluations(result)
    assert not failed.passed and "cannot evaluate" not in (failed.description or "")
    assert "site accepted_values" in failed.description and "site P1" in failed.description


def test_view_over_empty_or_missing_inputs_is_skipped(project):
    folder, warehouse = project
    with warehouse.get_connection() as conn:
        conn.execute("CREATE TABLE formatted.nothing AS SELECT * FROM formatted.probe LIMIT 0")
    view = "/*\ncolumns:\n  probe: Probe id\n*/\nSELECT DISTINCT probe FROM formatted.nothing"
    missing = view.replace("formatted.nothing", "formatted.not_yet")
    with DagsterInstance.ephemeral() as instance:
        for name, text, reason in (
            ("empty", view, "every input is empty: formatted.nothing"),
            ("early", missing, "input tables not built yet: formatted.not_yet"),
        ):
            result = build(folder, warehouse, name, text, instance)
            assert result.success, f"a view with {reason} must not fail the run"
            assert not result.asset_materializations_for_node(f"exploitation_{name}")
            (observed,) = result.asset_observations_for_node(f"exploitation_{name}")
            assert observed.metadata["skipped"].value == reason
    with warehouse.get_connection() as conn:
        assert conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'exploitation'"
        ).fetchone() == (0,)


def analyst_tables(platform) -> dict:
    """Every table of the exploitation zone and every pipeline's evaluation (the model metrics):
    types and values, ordered by every column. (Not the physical order: meter_readings streams
    its unduplicated rows unsorted and an incremental run appends, by design.)"""
    with platform.warehouse.get_connection() as conn:
        names = [
            f"{schema}.{table}"
            for schema, table in conn.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() "
                "WHERE schema_name = 'exploitation' OR table_name = 'evaluation' ORDER BY ALL"
            ).fetchall()
        ]
        return {
            name: conn.execute(f"SELECT * FROM {name} ORDER BY ALL").to_arrow_table()
            for name in names
        }


@pytest.mark.slow
def test_rebuilds_are_byte_identical(tmp_path):
    """The same inputs give the same exploitation tables and model metrics in a fresh data dir,
    and a no-op re-run in place changes none of them (bookkeeping lives in _platform)."""
    from dp_assets_tests.conftest import WORLD, generate, isolated_platform

    built = []
    for name in ("first", "second"):
        with isolated_platform(tmp_path / name) as platform:
            generate(platform.settings.data_dir, WORLD)
            assert platform.materialize().success
            built.append(analyst_tables(platform))
            if name == "first":
                assert platform.materialize(BACKBONE).success  # nothing new: a no-op
                again = analyst_tables(platform)
    first, second = built
    assert any(name.endswith(".evaluation") for name in first), "the pipelines must have run"
    assert "exploitation.daily_consumption" in first and set(first) == set(second) == set(again)
    for name, table in first.items():
        assert table.equals(second[name]), f"{name} differs between two fresh data dirs"
        assert table.equals(again[name]), f"{name} changed in a no-op re-run"
