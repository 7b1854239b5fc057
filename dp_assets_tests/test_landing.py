"""The persistent landing store, the inbox sensor and the warehouse's lock message."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import duckdb
import pytest
from dagster import RunRequest, SkipReason, build_sensor_context

from dp_assets.landing.sensor import build_inbox_sensor
from dp_assets.landing.store import clear_inbox, land_files, safe_name, scan_inbox
from dp_assets.resources import Warehouse, WarehouseLocked
from dp_assets.settings import Settings
from dp_assets_tests.conftest import SOURCES


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DP_INBOX_QUIET_S", "0")
    return Settings(tmp_path / "data")


def drop(settings, relative, data=b"x\n"):
    path = settings.inbox / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_land_files_is_content_addressed_and_read_only(settings):
    drop(settings, "weather/a.json", b"same")
    drop(settings, "weather/b.json", b"same")
    drop(settings, "tariffs/a.json", b"same")
    rows = land_files(settings, scan_inbox(settings, SOURCES).files, {}).rows
    by_name = {(r["source"], r["original_name"]): r for r in rows}
    a, b, t = (
        by_name[("weather", "a.json")],
        by_name[("weather", "b.json")],
        by_name[("tariffs", "a.json")],
    )
    assert [a["redelivery"], b["redelivery"], t["redelivery"]].count(True) == 1  # same source only
    assert a["landed_path"] == b["landed_path"] != t["landed_path"]
    landed = settings.data_dir / t["landed_path"]
    assert landed.read_bytes() == b"same"
    assert oct(landed.stat().st_mode & 0o777) == "0o400"


def test_safe_name():
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("...") == "unnamed"
    assert len(safe_name("x" * 500)) == 100


def test_sensor_requests_a_run_only_for_new_files(settings):
    sensor = build_inbox_sensor(settings)
    with build_sensor_context() as context:
        assert isinstance(sensor(context), SkipReason)
        drop(settings, "weather/one.json")
        first = sensor(context)
        assert isinstance(first, RunRequest)
        context.update_cursor(context.cursor)
        assert isinstance(sensor(context), SkipReason), "no new file, no new run"
        time.sleep(0.01)
        drop(settings, "weather/.tmp-two.json")  # still being written: ignored
        assert isinstance(sensor(context), SkipReason)
        os.rename(settings.inbox / "weather/.tmp-two.json", settings.inbox / "weather/two.json")
        second = sensor(context)
        assert isinstance(second, RunRequest) and second.run_key != first.run_key


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "reader"])
def test_lock_conflict_names_the_holder(tmp_path, read_only):
    """A holder's lock, read-write or read-only (a notebook, ``duckdb -readonly``), names its PID.

    DuckDB's error continues differently after the PID for a read-only holder; the PID must be in
    the platform's own sentence, not only in the original error quoted at the end."""
    database = tmp_path / "w.duckdb"
    duckdb.connect(str(database)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; "
            f"c = duckdb.connect(sys.argv[1], read_only={read_only}); "
            "print('ready', flush=True); time.sleep(30)",
            str(database),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(
            WarehouseLocked,
            match=rf"locked by \S+ \(PID {holder.pid}\)\. DuckDB allows one process",
        ):
            with Warehouse(database=str(database), lock_timeout_s=0.5).get_connection():
                pass
    finally:
        holder.kill()
        holder.wait()


def test_transaction_rolls_back_on_error(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    with warehouse.transaction() as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    with pytest.raises(RuntimeError):
        with warehouse.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("killed midway")
    assert warehouse.query("SELECT x FROM t")["x"].to_list() == [1]


def test_a_delivery_already_recorded_is_not_recorded_twice(settings):
    """A run that committed its manifest but died before clearing the inbox leaves the file there."""
    from dp_assets.landing.store import delivery_key

    drop(settings, "weather/a.json", b"content")
    (file,) = scan_inbox(settings, SOURCES).files
    (row,) = land_files(settings, [file], {}).rows
    recorded = {delivery_key(row["source"], row["original_name"], None, row["inbox_changed_ns"])}
    landed = {(row["source"], row["sha256"]): row["landed_path"]}
    assert land_files(settings, [file], landed, recorded).rows == []

    # The same file delivered again, even with its modification time kept, is a new delivery.
    stat = file.path.stat()
    file.path.unlink()
    drop(settings, "weather/a.json", b"content")
    os.utime(settings.inbox / "weather/a.json", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (again,) = scan_inbox(settings, SOURCES).files
    (row,) = land_files(settings, [again], landed, recorded).rows
    assert row["redelivery"] and again.arrival_time == file.arrival_time


def test_crash_between_commit_and_inbox_clear_is_recovered(platform, monkeypatch):
    from dagster import AssetSelection

    import dp_assets.landing.assets as landing_assets

    platform.drop(
        "weather", "a.json", b'{"provider": "p", "units": {"temperature": "C"}, "observations": []}'
    )

    def die(files):
        raise KeyboardInterrupt("killed after the manifest was committed")

    monkeypatch.setattr(landing_assets, "clear_inbox", die)
    with pytest.raises(KeyboardInterrupt):
        platform.materialize(AssetSelection.groups("landing"))
    monkeypatch.setattr(landing_assets, "clear_inbox", clear_inbox)
    assert platform.materialize(AssetSelection.groups("landing")).success
    assert platform.sql("SELECT count(*), count(*) FILTER (redelivery) FROM landing.deliveries")[
        0
    ] == (1, 0)
    assert not (platform.settings.inbox / "weather" / "a.json").exists()


def test_one_sources_chain_can_be_selected(platform):
    """`--select` of one source's chain lands that source's files only; the others wait."""
    from dagster import AssetSelection

    weather = b'{"provider": "p", "units": {"temperature": "C"}, "observations": []}'
    platform.drop("weather", "a.json", weather)
    platform.drop("tariffs", "t.csv", b"tariff;valid_from;price\n")
    platform.drop("stray", "x.bin", b"\x00")
    result = platform.materialize(AssetSelection.assets(["landing", "weather"]).downstream(1))
    assert result.success
    landed = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
    assert landed[0] == "landing/weather" and "landing/tariffs" not in landed
    assert platform.sql("SELECT source, original_name FROM landing.deliveries") == [
        ("weather", "a.json")
    ]
    # Files of the sources not selected, and strays, wait for a run that lands them all.
    assert (platform.settings.inbox / "tariffs" / "t.csv").exists()
    assert (platform.settings.inbox / "stray" / "x.bin").exists()
