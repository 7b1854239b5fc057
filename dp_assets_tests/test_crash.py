"""A run killed with SIGKILL in the middle of a write leaves the last good tables, and the next run
completes. The kill is real (``DP_CRASH_AT`` makes the process SIGKILL itself at a named point, after
writing and before committing), run through the same CLI as CI and users."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_assets_tests.conftest import REPO, cli_env, hold_back

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SELECT = "group:landing or group:formatted or group:exploitation"
# What the step killed at each point writes: it must keep its last good state. Steps committed
# earlier in the same run have moved on, as they should.
OWNED = {
    "landing:copied": ["SELECT * FROM landing.deliveries"],
    "formatted.meters_vendor_b:written": [
        "SELECT * FROM formatted.meters_vendor_b",
        "SELECT * FROM formatted.meters_vendor_b_rejects",
        "SELECT * FROM formatted.file_outcomes WHERE source = 'meters_vendor_b'",
    ],
    "exploitation.meter_readings:written": ["SELECT * FROM exploitation.meter_readings"],
}


def materialize(env: dict, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**env, **({"DP_CRASH_AT": crash_at} if crash_at else {})}
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "dp_assets", "--select", SELECT]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def fail_dead_runs_now(home: Path) -> int:
    """Evaluate the fail_dead_runs sensor once against the instance; how many runs it failed."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context

    from dp_assets.automation import fail_dead_runs

    with DagsterInstance.from_config(str(home)) as instance:
        fail_dead_runs(build_sensor_context(instance=instance))
        return len(instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE])))


def snapshot(data_dir: Path, queries: list[str]) -> dict:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as conn:
        return {q: conn.execute(f"{q} ORDER BY ALL").fetchall() for q in queries}


def first_run_with_late_files_held(env: dict, tmp_path: Path) -> tuple:
    """A small world materialized without its late files, held back under ``tmp_path/held``
    for the run that gets killed: (the sample's manifest, the late files, where they are held)."""
    data = Path(env["DP_DATA_DIR"])
    manifest = generate(data, SampleParams(days=6, meters=12, seed=4))
    late = [f for f in manifest.files if f["late"]]
    held = tmp_path / "held"
    hold_back(data, late, held)
    first = materialize(env)
    assert first.returncode == 0, first.stderr[-3000:]
    return manifest, late, held


@pytest.mark.parametrize(
    "point",
    ["landing:copied", "formatted.meters_vendor_b:written", "exploitation.meter_readings:written"],
)
def test_sigkill_mid_write_keeps_the_last_good_tables(tmp_path, point):
    env = cli_env(tmp_path)
    data, home = Path(env["DP_DATA_DIR"]), Path(env["DAGSTER_HOME"])
    manifest, late, held = first_run_with_late_files_held(env, tmp_path)
    owned = OWNED[point] + [
        "SELECT * FROM landing.deliveries",
        "SELECT * FROM formatted.file_outcomes",
    ]
    good = snapshot(data, owned)

    for f in late:  # new files arrive; the run that takes them is killed mid-write
        shutil.move(held / f["source"] / f["name"], data / "inbox" / f["source"] / f["name"])
    killed = materialize(env, crash_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    after_kill = snapshot(data, OWNED[point])
    assert after_kill == {q: good[q] for q in OWNED[point]}, (
        "the killed step keeps its last good state"
    )
    assert fail_dead_runs_now(home) == 1, "the killed run is found and marked failed"

    final = materialize(env)
    assert final.returncode == 0, final.stderr[-3000:]
    after = snapshot(data, owned)
    names = [row[1] for row in after["SELECT * FROM landing.deliveries"]]
    assert sorted(names) == sorted(f["name"] for f in manifest.files), "each delivery once"
    outcomes = "SELECT * FROM formatted.file_outcomes"
    assert len(after[outcomes]) == len(good[outcomes]) + len(late), "the late files formatted once"
    assert not [p for p in (data / "inbox").rglob("*") if p.is_file()]


def test_a_formatting_killed_midway_keeps_the_batches_it_committed(tmp_path):
    """Formatting commits file batches one by one: killed in its second batch, it keeps the first
    (rows and outcomes together), and the next run formats only the files left."""
    env = cli_env(tmp_path)
    data = Path(env["DP_DATA_DIR"])
    generate(data, SampleParams(days=5, meters=8, seed=6))
    config = '{"ops": {"formatted_meters_vendor_b": {"config": {"batch_records": 1}}}}'
    select = ["--select", 'group:landing or key:"formatted/meters_vendor_b*"']
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "dp_assets", *select]

    def run(crash_at: str | None = None) -> subprocess.CompletedProcess:
        extra = {"DP_CRASH_AT": crash_at} if crash_at else {}
        return subprocess.run([*command, "--config-json", config], env={**env, **extra},
                              cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip

    killed = run("formatted.meters_vendor_b:written@2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    outcomes = "SELECT file_sha256, rows_formatted FROM formatted.file_outcomes WHERE source = 'meters_vendor_b'"
    rows_per_file = "SELECT file_sha256, count(*) FROM formatted.meters_vendor_b GROUP BY 1"
    first = snapshot(data, [outcomes, rows_per_file])
    assert len(first[outcomes]) == 1, "the first batch (one file) committed, the second did not"
    assert [(sha, n) for sha, n in first[outcomes] if n] == first[rows_per_file]

    final = run()
    assert final.returncode == 0, final.stderr[-3000:]
    after = snapshot(data, [outcomes, rows_per_file])
    landed = "SELECT count(*) FROM landing.deliveries WHERE source = 'meters_vendor_b' AND NOT redelivery"
    assert len(after[outcomes]) == snapshot(data, [landed])[landed][0][0] > 1
    assert set(first[outcomes]) <= set(after[outcomes]), (
        "the committed file was not formatted again"
    )
    assert [(sha, n) for sha, n in after[outcomes] if n] == after[rows_per_file]
