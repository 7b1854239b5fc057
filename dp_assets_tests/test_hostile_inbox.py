"""Hostile or careless inboxes: names that are not UTF-8, names swapped for symlinks or hard links,
files still being written without the ``.part`` protocol, world-readable raw data, and the leftovers
of a landing killed midway."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetSelection, RunRequest, build_sensor_context

from dp_assets.landing.sensor import build_inbox_sensor
from dp_assets.landing.store import (
    PENDING_COPIES,
    clear_inbox,
    land_files,
    scan_inbox,
    write_immutable,
)
from dp_assets.settings import Settings
from dp_assets_tests.conftest import REPO, SOURCES, cli_env, fresh_python

BIN = Path(sys.executable).parent
GOOD_A = b"meter_id;timestamp;consumption_kwh\nMTR-000001;2024-01-15 10:00;0,25\n"
BAD_NAME = b"bad\xff\xfeutf8.csv"
SECRET = b"root:x:0:0:TOP-SECRET-FROM-OUTSIDE\n"
LANDING = AssetSelection.groups("landing")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DP_INBOX_QUIET_S", "0")
    return Settings(tmp_path / "data")


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the data dir only its owner may read."""
    path = tmp_path / "outside" / "secret"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def drop(settings: Settings, relative: str | bytes, data: bytes) -> Path:
    path = Path(os.fsdecode(os.fsencode(settings.inbox) + b"/" + os.fsencode(relative)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def everything_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_name_that_is_not_utf8_lands_exactly_and_does_not_stop_the_others(platform):
    inbox = os.fsencode(platform.settings.inbox)
    for folder, data in ((b"meters_vendor_a", GOOD_A), (b"weather", b"not json"), (b"", b"stray")):
        os.makedirs(os.path.join(inbox, folder), exist_ok=True)
        Path(os.fsdecode(os.path.join(inbox, folder, BAD_NAME))).write_bytes(data)
    # A real name spelling the escape must stay a different name.
    platform.drop("meters_vendor_a", "bad\\xff\\xfeutf8.csv", GOOD_A.replace(b"10:", b"11:"))
    platform.drop("tariffs", "ok.csv", b"tariff,month,price_pln_per_kwh\nG11,2024-05,0.7\n")
    result = platform.materialize(AssetSelection.groups("landing", "formatted"))
    assert result.success

    rows = platform.sql(
        "SELECT source, original_name, original_name_hex, landed_path FROM landing.deliveries "
        "ORDER BY source, original_name_hex NULLS FIRST"
    )
    escaped = "bad\\xff\\xfeutf8.csv"
    assert [r[:3] for r in rows] == [
        ("_unknown", escaped, BAD_NAME.hex()),
        ("meters_vendor_a", escaped, None),
        ("meters_vendor_a", escaped, BAD_NAME.hex()),
        ("tariffs", "ok.csv", None),
        ("weather", escaped, BAD_NAME.hex()),
    ]
    assert bytes.fromhex(rows[2][2]) == BAD_NAME  # lossless
    assert (platform.settings.data_dir / rows[2][3]).read_bytes() == GOOD_A
    assert not [p for p in platform.settings.inbox.rglob("*") if p.is_file()]
    outcomes = platform.sql(
        "SELECT source, status FROM formatted.file_outcomes WHERE original_name = ? ORDER BY 1, 2",
        [escaped],
    )
    assert outcomes == [
        ("meters_vendor_a", "formatted"),
        ("meters_vendor_a", "formatted"),
        ("weather", "quarantined"),
    ]
    for source in ("weather", "_unknown"):
        (reason,) = (platform.settings.quarantine / source).glob("*.reason.txt")
        assert f"file: {escaped}\n" in reason.read_text()


def test_a_name_swapped_for_a_symlink_after_the_scan_is_not_followed(settings, secret):
    inbox_file = drop(settings, "weather/a.json", b"x" * len(SECRET))
    files = scan_inbox(settings, SOURCES).files
    inbox_file.unlink()
    inbox_file.symlink_to(secret)  # between the scan and the copy

    landing = land_files(settings, files, {})
    assert landing.rows == []
    assert [(s.name, s.why) for s in landing.skipped] == [("a.json", "a symlink: not followed")]
    clear_inbox(landing.taken)
    assert inbox_file.is_symlink(), "left where it is, not removed"
    assert SECRET not in everything_under(settings.data_dir)


def test_a_name_swapped_for_another_file_after_the_scan_is_not_taken(settings):
    inbox_file = drop(settings, "weather/a.json", b"{}")
    files = scan_inbox(settings, SOURCES).files
    inbox_file.unlink()
    drop(settings, "weather/a.json", b'{"other": 1}')  # a new inode under the same name

    landing = land_files(settings, files, {})
    assert landing.rows == [] and "since the scan" in landing.skipped[0].why
    clear_inbox(landing.taken)
    assert inbox_file.read_bytes() == b'{"other": 1}', "a new delivery, taken next time"


def test_a_hard_link_is_refused_without_reading_it(platform, secret):
    linked = platform.settings.inbox / "weather" / "passwd.json"
    linked.parent.mkdir(parents=True)
    os.link(secret, linked)
    stray = platform.settings.inbox / "passwd"
    os.link(secret, stray)
    symlink = platform.settings.inbox / "weather" / "link.json"
    symlink.symlink_to(secret)
    platform.drop("weather", ".hidden.json", b"{}")
    result = platform.materialize(LANDING)

    assert platform.sql("SELECT count(*) FROM landing.deliveries") == [(0,)]
    assert SECRET not in everything_under(platform.settings.data_dir / "landing")
    assert SECRET not in everything_under(platform.settings.data_dir / "quarantine")
    assert linked.exists() and stray.exists() and symlink.is_symlink()
    (weather,) = [
        m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == "weather"
    ]
    listed = weather.materialization.metadata["skipped"].value
    assert "passwd.json" in listed and "hard link (3 links)" in listed  # the secret, twice
    assert "link.json" in listed and "symlink" in listed and ".hidden.json" in listed
    assert "TOP-SECRET" not in listed


def test_landing_quarantine_and_secrets_are_owner_only(platform, monkeypatch):
    platform.drop("weather", "a.json", b'{"provider": "p", "units": {}, "observations": []}')
    platform.settings.inbox.joinpath("stray.txt").write_bytes(b"stray")
    assert platform.materialize(LANDING).success
    monkeypatch.delenv("DP_PII_KEY")
    platform.settings.pii_key()  # generated into secrets/
    data = platform.settings.data_dir
    written = [*(data / "landing").rglob("*"), *(data / "quarantine").rglob("*")]
    written += [data / "landing", data / "quarantine", data / "secrets", data / "secrets/pii_key"]
    assert len(written) > 10
    modes = {oct(stat.S_IMODE(p.stat().st_mode)) for p in written if p.is_dir()}
    assert modes == {"0o700"}
    modes = {oct(stat.S_IMODE(p.stat().st_mode)) for p in written if p.is_file()}
    assert modes == {"0o400"}
    # An erasure rewrites landed files through write_immutable: the same modes.
    write_immutable(data / "landing/weather/new/rewritten.json", b"{}")
    assert stat.S_IMODE((data / "landing/weather/new").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "landing/weather/new/rewritten.json").stat().st_mode) == 0o400


def test_group_access_is_one_setting(platform, monkeypatch):
    monkeypatch.setenv("DP_GROUP_ACCESS", "1")
    platform.drop("weather", "a.json", b"{}")
    assert platform.materialize(LANDING).success
    (landed,) = platform.settings.landing.rglob("*.json")
    assert stat.S_IMODE(landed.stat().st_mode) == 0o440
    assert stat.S_IMODE(landed.parent.stat().st_mode) == 0o750


@pytest.mark.parametrize("group", ["", "1"])
def test_files_duckdb_and_mlflow_create_are_not_world_readable(tmp_path, group):
    """The umask set when the platform's code is imported covers what other libraries create."""
    probe = (
        "import os, sqlite3, duckdb, dp_assets.settings; "
        "duckdb.connect('w.duckdb').execute('CREATE TABLE t AS SELECT 1'); "
        "sqlite3.connect('mlflow.db').execute('CREATE TABLE t (x)'); "
        "print(' '.join(oct(os.stat(f).st_mode & 0o777) for f in ('w.duckdb', 'mlflow.db')))"
    )
    env = cli_env(tmp_path, DP_GROUP_ACCESS=group)
    probe = f"import os; os.chdir({str(tmp_path)!r}); " + probe  # fresh_python runs in the repo
    assert fresh_python(probe, env) == ("0o640 0o640" if group else "0o600 0o600")


def test_a_file_still_being_written_is_taken_only_once_quiet(settings, monkeypatch):
    monkeypatch.setenv("DP_INBOX_QUIET_S", "1")
    path = settings.inbox / "meters_vendor_a" / "open.csv"
    path.parent.mkdir(parents=True)
    with path.open("wb") as collector:
        collector.write(GOOD_A[:40])  # the first half, with no .part name
        collector.flush()
        files = scan_inbox(settings, SOURCES).files
        assert files == []
        time.sleep(0.5)
        collector.write(GOOD_A[40:])  # more, before the quiet time has passed
    deadline = time.monotonic() + 30
    while not (files := scan_inbox(settings, SOURCES).files):
        assert time.monotonic() < deadline, "never quiet"
        time.sleep(0.1)
    landing = land_files(settings, files, {})
    clear_inbox(landing.taken)
    (row,) = landing.rows
    assert (settings.data_dir / row["landed_path"]).read_bytes() == GOOD_A, "whole"
    assert not path.exists()


def test_a_file_renamed_into_place_is_taken_at_once(settings, monkeypatch):
    monkeypatch.setenv("DP_INBOX_QUIET_S", "3600")
    part = drop(settings, "weather/a.json.part", b"{}")
    time.sleep(0.05)  # the rename's change time is then after the last write
    part.rename(part.with_name("a.json"))
    (file,) = scan_inbox(settings, SOURCES).files
    assert file.original_name == "a.json"


def test_a_file_changed_after_the_copy_stays_in_the_inbox(settings):
    path = drop(settings, "weather/a.json", b"first half")
    landing = land_files(settings, scan_inbox(settings, SOURCES).files, {})
    with path.open("ab") as collector:
        collector.write(b", second half")
    assert clear_inbox(landing.taken) == landing.taken
    assert path.read_bytes() == b"first half, second half", "not unlinked"
    (again,) = scan_inbox(settings, SOURCES).files  # a new delivery
    (row,) = land_files(settings, [again], {}).rows
    assert (settings.data_dir / row["landed_path"]).read_bytes() == b"first half, second half"


def test_the_sensor_comes_back_for_a_file_that_was_not_yet_quiet(settings, monkeypatch):
    monkeypatch.setenv("DP_INBOX_QUIET_S", "1")
    sensor = build_inbox_sensor(settings)
    drop(settings, "weather/slow.json", b"{}")  # still quiet for under a second
    part = drop(settings, "weather/fast.json.part", b"{}")
    time.sleep(0.05)
    part.rename(part.with_name("fast.json"))  # newer, and taken at once
    with build_sensor_context() as context:
        first = sensor(context)
        assert isinstance(first, RunRequest) and first.tags["dp/new_files"] == "1"
        context.update_cursor(context.cursor)
        time.sleep(1.1)
        second = sensor(context)
        assert isinstance(second, RunRequest) and second.run_key != first.run_key
        assert second.tags["dp/new_files"] == "2"  # fast.json is still there, not yet landed


@pytest.mark.slow  # three runs through the CLI, one killed
def test_a_landing_killed_midway_leaves_nothing_behind(tmp_path):
    env = cli_env(tmp_path)
    data = Path(env["DP_DATA_DIR"])
    settings = Settings(data)
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "dp_assets", "--select"]
    command.append("group:landing")

    def run(crash_at: str | None = None) -> subprocess.CompletedProcess:
        extra = {"DP_CRASH_AT": crash_at} if crash_at else {}
        return subprocess.run(command, env={**env, **extra}, cwd=REPO, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    drop(settings, "weather/kept.json", b'{"kept": 1}')
    assert run().returncode == 0
    for n in range(4):
        drop(settings, f"weather/{n}.json", b'{"n": %d}' % n)
    killed = run("immutable:written@3")  # two new files copied, the third only as a .tmp
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    left = sorted(p.name for p in settings.landing.rglob("*") if p.is_file())
    assert left[0].endswith(".tmp") and left[1] == PENDING_COPIES and len(left) == 5
    withdrawn = sorted(settings.inbox.joinpath("weather").glob("*.json"))[0]
    withdrawn.unlink()  # its copy now belongs to no delivery

    assert run().returncode == 0
    landed = {str(p.relative_to(data)) for p in settings.landing.rglob("*") if p.is_file()}
    referenced = {
        path for (path,) in fresh_rows(data, "SELECT landed_path FROM landing.deliveries")
    }
    assert landed == referenced and len(referenced) == 4  # kept.json and the three left
    assert not any(withdrawn.name in path for path in landed), "the orphan copy is deleted"


def fresh_rows(data: Path, query: str) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute(query).fetchall()
