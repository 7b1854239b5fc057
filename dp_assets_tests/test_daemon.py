"""Unattended operation with the real daemon and UI: 50 files dropped together while `dagster dev`
runs are landed by the inbox sensor, and declarative automation carries them through formatted and
exploitation within two minutes, with no failed run (no DuckDB lock error); one more file dropped
while automation still runs is landed behind it and formatted too; the lineage page shows every
zone in headless Chromium. The lineage of the assets that read the catalog or the event log
(pipeline health, the data dictionary) shows no edge from every asset."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import devserver
import pytest

from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_assets_tests.conftest import REPO, cli_env, hold_back

pytestmark = [pytest.mark.slow, pytest.mark.serial]
BIN = Path(sys.executable).parent
DROPPED = 50
GROUPS = ("landing", "formatted", "exploitation", "energy_forecast", "customer_churn")
ACTIVE = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def graphql(port: int, query: str) -> dict:
    return devserver.graphql(port, query, timeout_s=30)


def latest_materializations(port: int) -> dict[str, tuple[str, float]]:
    nodes = graphql(
        port,
        "{ assetNodes { assetKey { path } groupName assetMaterializations(limit: 1) { timestamp } } }",
    )["assetNodes"]
    return {
        "/".join(n["assetKey"]["path"]): (
            n["groupName"],
            float(n["assetMaterializations"][0]["timestamp"]) / 1000
            if n["assetMaterializations"]
            else 0.0,
        )
        for n in nodes
    }


def runs(port: int) -> list[dict]:
    data = graphql(port, "{ runsOrError { ... on Runs { results { runId jobName status } } } }")
    return data["runsOrError"]["results"]


def chromium_or_skip() -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: `make test` installs Debian's chromium package")
    return chromium


def dagster_dev(env: dict[str, str], tmp_path: Path):
    """``dagster dev`` on a free port, answering within two minutes; yields the port. Its output
    goes to ``tmp_path/dagster_dev.log``, which tests read afterwards."""
    return devserver.dagster_dev(env, tmp_path / "dagster_dev.log", timeout_s=120)


def browser(chromium: str, tmp_path: Path) -> list[str]:
    return [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,1000", "--virtual-time-budget=20000"]  # fmt: skip


def test_files_dropped_while_the_daemon_runs_flow_through_every_zone(tmp_path):
    chromium = chromium_or_skip()
    env = cli_env(tmp_path)
    data = Path(env["DP_DATA_DIR"])

    # History first (as CI would materialize it), then the last 50 deliveries arrive at once.
    manifest = generate(data, SampleParams(days=112, meters=40, seed=3))
    held = tmp_path / "held"
    daily = [
        f
        for f in manifest.files
        if f["source"] in ("meters_vendor_a", "meters_vendor_b", "weather")
    ]
    dropped = sorted(daily, key=lambda f: f["arrival"])[-DROPPED - 1 :]
    late = dropped.pop()  # arrives while automation follows the others
    hold_back(data, [*dropped, late], held)
    setup = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "dp_assets", "--select", "*"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr[-3000:]

    with dagster_dev(env, tmp_path) as port:
        dropped_at = time.time()
        for f in dropped:  # all together
            shutil.move(held / f["source"] / f["name"], data / "inbox" / f["source"] / f["name"])

        zones = ("landing", "formatted", "exploitation")
        deadline = time.monotonic() + 120
        while True:
            stale = [
                k
                for k, (group, at) in latest_materializations(port).items()
                if group in zones and at < dropped_at
            ]
            if not stale:
                break
            assert time.monotonic() < deadline, f"not materialized within 2 minutes: {stale}"
            time.sleep(3)
        took = time.time() - dropped_at

        # The trial's gap: a file arriving while automation runs is landed by a `land` run queued
        # behind it in the warehouse pool; that landing must be followed, not wait for a next file.
        busy = [r["jobName"] for r in runs(port) if r["status"] in ACTIVE]
        late_at = time.time()
        source = late["source"]
        shutil.move(held / source / late["name"], data / "inbox" / source / late["name"])
        deadline = time.monotonic() + 180
        while True:
            latest = latest_materializations(port)
            landed = latest[f"landing/{source}"][1]
            if landed > late_at and latest[f"formatted/{source}"][1] > landed:
                break
            assert time.monotonic() < deadline, f"{late['name']} not landed and formatted in 3 min"
            time.sleep(3)
        late_took = time.time() - late_at

        while any(r["status"] in ACTIVE for r in runs(port)):
            time.sleep(
                2
            )  # let automation finish (features, predictions) before reading the warehouse
        finished = runs(port)
        assert not [r for r in finished if r["status"] == "FAILURE"], finished
        assert [r["jobName"] for r in finished].count("land") >= 1

        screenshot = tmp_path / "lineage.png"
        page = f"http://127.0.0.1:{port}/asset-groups"
        subprocess.run(
            [*browser(chromium, tmp_path), f"--screenshot={screenshot}", page],
            capture_output=True,
            timeout=120,
        )
        dom = subprocess.run(
            [*browser(chromium, tmp_path), "--dump-dom", page],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert screenshot.stat().st_size > 10_000
        for group in GROUPS:
            assert group in dom, f"group {group} not shown on the lineage page"

    import duckdb

    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM landing.deliveries").fetchone()[0] == len(
            manifest.files
        )
        outcomes = conn.execute("SELECT count(*) FROM formatted.file_outcomes").fetchone()[0]
    redeliveries = len(manifest.duplicate_deliveries)
    assert outcomes == len(manifest.files) - redeliveries, "every landed file formatted once"
    print(f"{DROPPED} files: zones materialized {took:.0f} s after the drop")
    print(f"one more file, dropped while {busy or 'no run'} ran: formatted after {late_took:.0f} s")
    lands = [r["jobName"] for r in finished].count("land")
    print(f"runs: {lands} land, {len(finished) - lands - 1} by automation (and the setup's)")


def test_the_lineage_of_catalog_readers_draws_no_edge_from_every_asset(tmp_path):
    """Definitions only (nothing materialized): the lineage tab of pipeline health and of the data
    dictionary, as Chromium renders it, shows none of the assets they describe, while that of a
    view shows its neighbours (so the page does show edges when there are some)."""
    chromium = chromium_or_skip()
    env = cli_env(tmp_path)
    with dagster_dev(env, tmp_path) as port:
        nodes = graphql(port, "{ assetNodes { assetKey { path } dependencyKeys { path } } }")
        parents = {
            "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
            for n in nodes["assetNodes"]
        }
        assert (
            parents["monitoring/pipeline_health"] == parents["governance/data_dictionary"] == set()
        )
        graphql(port, "mutation { setNuxSeen }")  # the welcome dialog would cover the graph

        def lineage(asset: str) -> str:
            page = f"http://127.0.0.1:{port}/assets/{asset}?view=lineage"
            run = [*browser(chromium, tmp_path), "--dump-dom", page]
            return subprocess.run(run, capture_output=True, text=True, timeout=120).stdout

        elsewhere = ("meters_vendor_a", "daily_consumption", "sandbox", "features")
        for asset in ("monitoring/pipeline_health", "governance/data_dictionary"):
            dom = lineage(asset)
            assert asset.rpartition("/")[2] in dom, f"{asset}: lineage page not rendered"
            assert [name for name in elsewhere if name in dom] == [], asset
        view = lineage("exploitation/daily_consumption")
        assert "meter_readings" in view and "sandbox" in view
