"""Generate sample data, materialize the whole graph through the real defs, check the manifest.

The window covers the autumn DST change, so the repeated local hour of vendor A flows through too.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import polars as pl
import pytest

from dp_projects.utility.sample_data.generator import (
    EXPECTED_QUARANTINE,
    EXPECTED_REASON,
    PROVIDERS,
    SampleParams,
    generate,
)

PARAMS = SampleParams(days=6, meters=24, seed=11, start=dt.date(2024, 10, 24))
pytestmark = pytest.mark.slow

TABLES = [
    "landing.deliveries", "formatted.meters_vendor_a", "formatted.meters_vendor_a_rejects",
    "formatted.meters_vendor_b", "formatted.meters_vendor_b_rejects", "formatted.weather",
    "formatted.weather_rejects", "formatted.customers", "formatted.customers_rejects",
    "formatted.tariffs", "formatted.tariffs_rejects", "exploitation.customers",
    "exploitation.customer_id_map", "exploitation.meter_readings", "exploitation.reading_gaps",
    "exploitation.daily_consumption",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One generated world, landed in two waves (late files second), materialized twice."""
    from dp_assets_tests.conftest import BACKBONE, isolated_platform

    with isolated_platform(tmp_path_factory.mktemp("e2e")) as platform:
        manifest = generate(platform.settings.data_dir, PARAMS)
        held = platform.settings.data_dir / "held_back"
        late = [f for f in manifest.files if f["late"]]
        for f in late:
            (held / f["source"]).mkdir(parents=True, exist_ok=True)
            shutil.move(
                platform.settings.inbox / f["source"] / f["name"], held / f["source"] / f["name"]
            )

        first = platform.materialize(BACKBONE)
        for f in late:  # the late files arrive after the rest has been processed
            shutil.move(
                held / f["source"] / f["name"], platform.settings.inbox / f["source"] / f["name"]
            )
        second = platform.materialize(BACKBONE)
        snapshot = {t: platform.frame(f"SELECT * FROM {t}") for t in TABLES}
        third = platform.materialize(BACKBONE)
        yield platform, manifest, late, (first, second, third), snapshot


def test_runs_succeed_and_late_files_were_held(run):
    _, _, late, results, _ = run
    assert late, "the generator should produce late files"
    assert all(r.success for r in results)


def test_every_file_is_in_the_persistent_landing(run):
    platform, manifest, *_ = run
    delivered = platform.frame(
        "SELECT source, original_name, sha256, landed_path, redelivery FROM landing.deliveries"
    )
    assert delivered.height == len(manifest.files)
    assert set(zip(delivered["source"], delivered["original_name"])) == {
        (f["source"], f["name"]) for f in manifest.files
    }
    for path in delivered["landed_path"]:
        landed = platform.settings.data_dir / path
        assert landed.is_file() and not landed.stat().st_mode & 0o222, (
            f"{path} must exist read-only"
        )
    assert not any(p.is_file() for p in platform.settings.inbox.rglob("*")), "the inbox is emptied"


def test_duplicate_deliveries_recognised(run):
    platform, manifest, *_ = run
    redelivered = {
        tuple(r)
        for r in platform.sql(
            "SELECT source, original_name FROM landing.deliveries WHERE redelivery"
        )
    }
    assert redelivered == {(d["source"], d["file"]) for d in manifest.duplicate_deliveries}


def test_malformed_files_quarantined_with_reason(run):
    platform, manifest, *_ = run
    outcomes = {
        (s, n): r
        for s, n, r in platform.sql(
            "SELECT source, original_name, reason FROM formatted.file_outcomes WHERE status = 'quarantined'"
        )
    }
    assert set(outcomes) == {(p["source"], p["file"]) for p in manifest.file_problems}
    for problem in manifest.file_problems:
        assert (
            EXPECTED_QUARANTINE[problem["kind"]] in outcomes[(problem["source"], problem["file"])]
        )
        copies = list(
            (platform.settings.quarantine / problem["source"]).glob(
                "*" + problem["file"].replace(" ", "_")
            )
        )
        assert copies and copies[0].with_name(copies[0].name + ".reason.txt").exists()


def test_every_injected_row_problem_is_rejected_with_its_reason(run):
    platform, manifest, *_ = run
    rejects = pl.concat(
        platform.frame(
            f"SELECT '{s}' AS source, d.original_name AS file, r.record_no, r.reason FROM formatted.{s}_rejects r "
            f"JOIN landing.deliveries d ON d.sha256 = r.file_sha256 AND d.source = '{s}' AND NOT d.redelivery"
        )
        for s in ("meters_vendor_a", "meters_vendor_b", "weather", "customers", "tariffs")
    )
    found = {
        (r["source"], r["file"], r["record_no"]): r["reason"] for r in rejects.iter_rows(named=True)
    }
    assert manifest.row_problems
    for problem in manifest.row_problems:
        key = (problem["source"], problem["file"], problem["record_no"])
        assert key in found, f"injected {problem['kind']} not rejected: {key}"
        assert EXPECTED_REASON[problem["kind"]] in found[key]
    assert len(found) == len(manifest.row_problems), "nothing but the injected problems is rejected"


def test_every_input_row_is_formatted_or_rejected(run):
    platform, manifest, *_ = run
    expected = {
        (f["source"], f["name"]): f["records"] for f in manifest.files if f["kind"] == "data"
    }
    counted = {}
    for source in ("meters_vendor_a", "meters_vendor_b", "weather", "customers", "tariffs"):
        for name, rows in platform.sql(
            f"SELECT d.original_name, (SELECT count(*) FROM formatted.{source} t WHERE t.file_sha256 = d.sha256) "
            f"+ (SELECT count(*) FROM formatted.{source}_rejects r WHERE r.file_sha256 = d.sha256) "
            f"FROM landing.deliveries d WHERE d.source = '{source}' AND NOT d.redelivery AND d.quarantine_reason IS NULL"
        ):
            counted[(source, name)] = rows
    for key, records in expected.items():
        assert counted[key] == records, key


def test_exploitation_integrates_sources(run):
    platform, manifest, *_ = run
    people = len(manifest.people)
    (customers,) = platform.sql("SELECT count(*) FROM exploitation.customers")[0]
    # One row per person; a person whose only CRM record was rejected cannot be resolved.
    assert customers == people - len(manifest.orphaned_meters)
    # Readings: both vendors, deduplicated, kWh; the migration overlap is dropped, not doubled.
    (dupes,) = platform.sql(
        "SELECT count(*) - count(DISTINCT (meter_id, reading_start)) FROM exploitation.meter_readings"
    )[0]
    assert dupes == 0
    assert (
        platform.sql(
            "SELECT count(DISTINCT vendor) FROM exploitation.meter_readings WHERE meter_id IN (SELECT unnest(?))",
            [manifest.migrating_meters],
        )[0][0]
        == 2
    )
    # Every reading the generator dropped lies inside a reported gap (unless it was a meter's first
    # or last interval, which no gap can enclose).
    dropped = pl.DataFrame(manifest.dropped_readings).with_columns(
        reading_start=pl.col("reading_start").str.to_datetime(time_zone="UTC")
    )
    with platform.warehouse.get_connection() as conn:
        conn.register("dropped", dropped)
        unreported = conn.execute(
            """SELECT d.* FROM dropped d
               JOIN (SELECT meter_id, min(reading_start) AS first, max(reading_start) AS last
                     FROM exploitation.meter_readings GROUP BY ALL) m USING (meter_id)
               WHERE d.reading_start > m.first AND d.reading_start < m.last
                 AND NOT EXISTS (SELECT 1 FROM exploitation.reading_gaps g WHERE g.meter_id = d.meter_id
                                 AND d.reading_start >= g.gap_start AND d.reading_start < g.gap_end)"""
        ).fetchall()
    assert len(dropped) > 0 and unreported == []
    daily = platform.frame("SELECT * FROM exploitation.daily_consumption")
    assert daily.height > 0 and daily["temperature_mean_c"].null_count() == 0
    assert daily["price_net_pln_per_kwh"].null_count() == 0


def test_units_are_homogenized(run):
    platform, *_ = run
    # Late October in Poland: both providers (one reports Fahrenheit) give plausible Celsius.
    per_provider = dict(
        platform.sql("SELECT provider, avg(temperature_c) FROM formatted.weather GROUP BY ALL")
    )
    assert set(per_provider) == {"meteo", "skycast"}
    assert all(-10 < t < 25 for t in per_provider.values()), per_provider
    # Both vendors in kWh: a household's half-hour is a fraction of a kWh whichever vendor sent it.
    per_vendor = dict(
        platform.sql("SELECT vendor, median(kwh) FROM exploitation.meter_readings GROUP BY ALL")
    )
    assert all(0.02 < v < 2 for v in per_vendor.values()), per_vendor


def test_checks_report_the_injected_cross_source_problems(run):
    platform, manifest, _, results, _ = run
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in results[0].get_asset_check_evaluations()
    }
    assert evaluations[("exploitation/meter_readings", "meters_known")] is False
    # Every stored table is guarded by a blocking schema check, and all of them pass.
    from dp_assets_tests.conftest import BACKBONE

    guarded = {asset for (asset, name) in evaluations if name == "schema"}
    assert guarded == {
        k.to_user_string() for k in BACKBONE.resolve(platform.defs.resolve_asset_graph())
    }
    assert all(
        passed
        for (asset, name), passed in evaluations.items()
        if name in ("schema", "file_outcomes")
    )
    assert sum(name == "file_outcomes" for (_, name) in evaluations) == 5
    unknown = {
        m
        for (m,) in platform.sql(
            "SELECT DISTINCT meter_id FROM exploitation.meter_readings ANTI JOIN exploitation.customers USING (meter_id)"
        )
    }
    assert unknown == set(manifest.unknown_meters) | set(manifest.orphaned_meters)


def test_dst_repeated_hour_becomes_two_utc_hours(run):
    platform, *_ = run
    # 2024-10-27 02:00-03:00 local happens twice: 00:00-01:00 UTC (CEST) and 01:00-02:00 UTC (CET).
    rows = platform.sql(
        "SELECT count(DISTINCT reading_start) FROM formatted.meters_vendor_a "
        "WHERE reading_start >= TIMESTAMPTZ '2024-10-27 00:00:00+00' AND reading_start < TIMESTAMPTZ '2024-10-27 02:00:00+00'"
    )
    assert rows[0][0] == 4


def test_second_materialization_changes_nothing(run):
    platform, _, _, _, snapshot = run
    for table, before in snapshot.items():
        after = platform.frame(f"SELECT * FROM {table}")
        assert after.equals(before), f"{table} changed on re-materialization"


def test_metadata_on_every_asset(run):
    platform, _, _, results, _ = run
    for event in results[0].get_asset_materialization_events():
        metadata = event.materialization.metadata
        assert "dagster/row_count" in metadata and "preview" in metadata, event.asset_key
    graph = platform.defs.resolve_asset_graph()
    without_table = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and node.owners and node.code_version and node.kinds, key
        if "dagster/column_schema" not in node.metadata:
            without_table.add(key.to_user_string())
            continue
        for column in node.metadata["dagster/column_schema"].columns:
            assert column.description, f"{key}.{column.name}"
    # Only the model assets (a registered model in MLflow) and the report (an HTML file) store no
    # table.
    assert without_table == {"energy_forecast/model", "customer_churn/model", "reporting/report"}


def test_manifest_round_trips(run):
    platform, manifest, *_ = run
    stored = json.loads(platform.settings.sample_manifest.read_text())
    assert len(stored["files"]) == len(manifest.files)


def test_running_the_demo_twice_records_every_redelivery_and_changes_nothing_else(platform):
    """`make demo` twice: the same sample files arrive again (same names, content and mtimes)."""
    from dp_assets_tests.conftest import BACKBONE

    params = SampleParams(days=3, meters=4, seed=1)
    manifest = generate(platform.settings.data_dir, params)
    platform.materialize(BACKBONE)
    before = {t: platform.frame(f"SELECT * FROM {t}") for t in TABLES if t != "landing.deliveries"}
    generate(platform.settings.data_dir, params)
    platform.materialize(BACKBONE)
    deliveries = platform.frame("SELECT * FROM landing.deliveries")
    assert deliveries.height == 2 * len(manifest.files)
    duplicates_in_sample = len(manifest.duplicate_deliveries)
    assert deliveries["redelivery"].sum() == len(manifest.files) + duplicates_in_sample
    for table, frame in before.items():
        assert platform.frame(f"SELECT * FROM {table}").equals(frame), table


def test_incremental_readings_equal_a_full_rebuild(run):
    """The late files were integrated incrementally, readings, gaps and daily consumption; the
    result is what a rebuild gives."""
    from dp_projects.utility.views._queries import DAILY_CONSUMPTION, READING_GAPS, meter_readings

    platform, _, _, results, snapshot = run
    second = {
        m.asset_key.to_user_string(): m.materialization.metadata
        for m in results[1].get_asset_materialization_events()
    }
    assert second["exploitation/meter_readings"]["files integrated"].value > 0
    for table in ("reading_gaps", "daily_consumption"):
        assert second[f"exploitation/{table}"]["mode"].value == "incremental", table
    for table, query, key in (
        ("exploitation.meter_readings", meter_readings(), ["meter_id", "reading_start"]),
        ("exploitation.reading_gaps", READING_GAPS, ["meter_id", "gap_start"]),
        ("exploitation.daily_consumption", DAILY_CONSUMPTION, ["customer_id", "day"]),
    ):
        stored, rebuilt = snapshot[table].sort(key), platform.frame(query).sort(key)
        assert stored.height == rebuilt.height > 0, table
        assert stored.equals(rebuilt), table


def test_reformat_all_replaces_rows_without_duplicating_them(run):
    from dagster import AssetSelection

    platform, _, _, _, snapshot = run
    config = {"ops": {"formatted_meters_vendor_a": {"config": {"reformat_all": True}}}}
    result = platform.materialize(
        AssetSelection.assets(["formatted", "meters_vendor_a"]).required_multi_asset_neighbors(),
        run_config=config,
    )
    assert result.success
    for table, key in (
        ("formatted.meters_vendor_a", ["file_sha256", "record_no"]),
        ("formatted.meters_vendor_a_rejects", ["file_sha256", "record_no"]),
    ):
        assert platform.frame(f"SELECT * FROM {table}").sort(key).equals(snapshot[table].sort(key))
    # The reformatted files are integrated again; the readings still equal a full rebuild.
    from dp_projects.utility.views._queries import meter_readings

    again = platform.materialize(AssetSelection.assets(["exploitation", "meter_readings"]))
    (event,) = again.get_asset_materialization_events()
    assert event.materialization.metadata["files integrated"].value > 0
    key = ["meter_id", "reading_start"]
    stored = platform.frame("SELECT * FROM exploitation.meter_readings").sort(key)
    assert stored.equals(platform.frame(meter_readings()).sort(key))


def test_daily_consumption_follows_weather_and_tariff_corrections(platform):
    """A re-exported weather file for a past day: daily_consumption recomputes that day (every
    customer), incrementally, and equals a rebuild; other days keep their rows. A corrected tariff
    file makes it rebuild in full."""
    from dp_projects.utility.views._queries import DAILY_CONSUMPTION
    from dp_assets_tests.conftest import BACKBONE

    def daily_mode(result) -> str:
        (event,) = [
            e for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "exploitation/daily_consumption"
        ]  # fmt: skip
        return event.materialization.metadata["mode"].value

    generate(platform.settings.data_dir, SampleParams(days=4, meters=5, seed=3))
    platform.materialize(BACKBONE)
    key = ["customer_id", "day"]
    before = platform.frame("SELECT * FROM exploitation.daily_consumption").sort(key)
    # The first day's file of a provider covering a customer's region: landed names lead with a
    # content hash, so which provider's file sorts first depends on the data.
    regions = {r for (r,) in platform.sql("SELECT DISTINCT region FROM exploitation.customers")}
    provider = min(p for p, (_, covered) in PROVIDERS.items() if regions & set(covered))
    first = min(platform.settings.landing.glob(f"weather/**/*_{provider}_*.json"))
    report = json.loads(first.read_bytes())
    for observation in report["observations"]:
        observation["temperature"] += 9.0
    platform.drop(
        "weather", f"corrected_{first.name.split('_', 2)[2]}", json.dumps(report).encode()
    )
    assert daily_mode(platform.materialize(BACKBONE)) == "incremental"
    after = platform.frame("SELECT * FROM exploitation.daily_consumption").sort(key)
    assert after.equals(platform.frame(DAILY_CONSUMPTION).sort(key))
    day = dt.datetime.fromisoformat(report["observations"][0]["time"]).date()
    changed = after.join(before, on=key, suffix="_before").filter(
        pl.col("temperature_mean_c") != pl.col("temperature_mean_c_before")
    )
    assert changed.height and set(changed["day"]) == {day}
    warmer = changed["temperature_mean_c"] - changed["temperature_mean_c_before"]
    fahrenheit = report["units"]["temperature"] == "F"
    assert warmer.round(3).unique().to_list() == [5.0 if fahrenheit else 9.0]

    # A corrected tariff file can change any month's price: a full rebuild, equal to the query.
    tariffs = min(p for p in platform.settings.landing.glob("tariffs/**/*.csv") if p.stat().st_size)
    header, first_row, *rest = tariffs.read_text().splitlines()
    tariff, month, price = first_row.split(",")
    corrected = [header, f"{tariff},{month},{float(price) + 0.1:.4f}", *rest]
    platform.drop("tariffs", "tariffs_corrected.csv", "\n".join(corrected).encode() + b"\n")
    assert daily_mode(platform.materialize(BACKBONE)) == "full rebuild"
    rebuilt = platform.frame("SELECT * FROM exploitation.daily_consumption").sort(key)
    assert rebuilt.equals(platform.frame(DAILY_CONSUMPTION).sort(key))
    assert not rebuilt.equals(after)
