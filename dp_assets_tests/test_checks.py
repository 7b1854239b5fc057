"""Blocking checks guard what downstream reads: a failure stays until its cause is gone, and an
exploitation write that fails its check is rolled back instead of committed.

The bad row is planted straight into DuckDB, as in the reliability trial (issue 19): a reading of
meter 'BAD-METER' with -5.0 kWh, under the hash of a landed vendor A file.
"""

from __future__ import annotations

import shutil

import pytest
from dagster import AssetKey, AssetSelection, DagsterEventType

from dp_assets.exploitation import blocks
from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_projects.utility.views._queries import meter_readings
from dp_assets_tests.conftest import BACKBONE

FORMATTED_A = AssetKey(["formatted", "meters_vendor_a"])
READINGS = AssetKey(["exploitation", "meter_readings"])
# The vendor files of the last two days arrive later, a day at a time.
WAVES = ("2024-01-23", "2024-01-24")
BAD = "meter_id = 'BAD-METER'"
# What meter_readings' write leaves behind: the table and its bookkeeping.
OWNED = (
    "exploitation.meter_readings",
    blocks.INTEGRATED,
    blocks.CHANGES,
    blocks.WATERMARKS,
)


@pytest.fixture
def waves(platform):
    """A small world built through the backbone, and a function landing its next wave of files."""
    manifest = generate(platform.settings.data_dir, SampleParams(days=5, meters=5, seed=1))
    held = platform.settings.data_dir / "held_back"
    later = [[f for f in manifest.files if f["arrival"].startswith(day)] for day in WAVES]
    for f in sum(later, []):
        (held / f["source"]).mkdir(parents=True, exist_ok=True)
        shutil.move(
            platform.settings.inbox / f["source"] / f["name"], held / f["source"] / f["name"]
        )
    assert all(later) and platform.materialize(BACKBONE).success

    def arrive() -> list[dict]:
        wave = later.pop(0)
        for f in wave:
            shutil.move(
                held / f["source"] / f["name"], platform.settings.inbox / f["source"] / f["name"]
            )
        return wave

    return arrive


def plant_bad_row(platform, wave: list[dict]) -> None:
    """A copy of a stored vendor A reading, made invalid, under the hash of the wave's file."""
    (name,) = [f["name"] for f in wave if f["source"] == "meters_vendor_a"]
    platform.sql(
        """INSERT INTO formatted.meters_vendor_a
           SELECT * REPLACE ('BAD-METER' AS meter_id, -5.0 AS kwh, 999999 AS record_no,
                             (SELECT sha256 FROM landing.deliveries WHERE original_name = ?)
                             AS file_sha256)
           FROM formatted.meters_vendor_a LIMIT 1""",
        [name],
    )


def checks(result) -> dict[tuple[AssetKey, str], object]:
    return {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}


def materialized_keys(result) -> set[AssetKey]:
    return {
        e.event_specific_data.materialization.asset_key
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    }


def bad_readings(platform) -> int:
    return platform.sql(f"SELECT count(*) FROM exploitation.meter_readings WHERE {BAD}")[0][0]


def snapshot(platform) -> dict[str, list[tuple]]:
    return {t: platform.sql(f"SELECT * FROM {t} ORDER BY ALL") for t in OWNED}


def assert_readings_equal_a_full_rebuild(platform) -> None:
    with platform.warehouse.get_connection() as conn:
        stored = conn.execute("SELECT * FROM exploitation.meter_readings ORDER BY ALL").fetchall()
        rebuilt = conn.execute(f"SELECT * FROM ({meter_readings()}) ORDER BY ALL").fetchall()
    assert stored == rebuilt


def test_a_failed_formatted_check_stays_failed_until_the_table_is_clean(platform, waves):
    """The trial's sequence: the check that found the bad row must not pass on the next run
    because that run formatted other files, and the row must never reach meter_readings."""
    first = waves()
    assert platform.materialize(AssetSelection.groups("landing")).success
    plant_bad_row(platform, first)  # its file is landed, about to be formatted

    found = platform.materialize(BACKBONE, raise_on_error=False)
    check = checks(found)[(FORMATTED_A, "schema")]
    assert not check.passed and "BAD-METER" in (check.description or "")
    assert READINGS not in materialized_keys(found), "downstream stopped"

    waves()  # the next day arrives: this run formats only its files
    for attempt in ("next day", "nothing new"):
        again = platform.materialize(BACKBONE, raise_on_error=False)
        assert not checks(again)[(FORMATTED_A, "schema")].passed, attempt
        assert READINGS not in materialized_keys(again), attempt
        assert bad_readings(platform) == 0, attempt

    platform.sql(f"DELETE FROM formatted.meters_vendor_a WHERE {BAD}")
    clean = platform.materialize(BACKBONE)
    assert all(e.passed for e in checks(clean).values() if e.severity.value == "ERROR")
    assert checks(clean)[(FORMATTED_A, "schema")].passed
    assert READINGS in materialized_keys(clean)
    assert bad_readings(platform) == 0
    assert_readings_equal_a_full_rebuild(platform)  # both waves integrated, nothing lost


def test_an_exploitation_write_failing_its_check_keeps_the_previous_state(platform, waves):
    """The bad row reaches meter_readings' input after the formatted check passed: the write is
    checked before its commit, rolled back, reported with its reason, and fails again on retry
    (its input stays pending) until the row is gone."""
    first = waves()
    assert platform.materialize(AssetSelection.groups("landing", "formatted")).success
    before = snapshot(platform)
    plant_bad_row(platform, first)  # formatted, not yet integrated

    for attempt in ("first", "retry"):
        failed = platform.materialize(AssetSelection.groups("exploitation"), raise_on_error=False)
        check = checks(failed)[(READINGS, "schema")]
        assert not check.passed and "BAD-METER" in (check.description or ""), attempt
        assert READINGS not in materialized_keys(failed), attempt
        (failure,) = [
            e
            for e in failed.all_events
            if e.event_type == DagsterEventType.STEP_FAILURE
            and e.step_key == "exploitation_meter_readings"
        ]
        assert "rolled back" in failure.step_failure_data.error.message, attempt
        assert snapshot(platform) == before, f"{attempt}: the previous state, row for row"

    platform.sql(f"DELETE FROM formatted.meters_vendor_a WHERE {BAD}")
    assert platform.materialize(AssetSelection.groups("exploitation")).success
    assert snapshot(platform)[blocks.INTEGRATED] != before[blocks.INTEGRATED]
    assert_readings_equal_a_full_rebuild(platform)
