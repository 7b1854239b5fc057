"""The 50-file drop, for bench/run.py: the latest 50 daily files, held back before the full build,
are moved into the inbox in two halves ``STAGGER_S`` apart while `dagster dev` (webserver and
daemon) runs with the `warehouse` pool at a given size; timed from the first half's drop until
every run the sensors and automation started for them has ended. Dropped all at once, one `land`
run takes them and one automation run follows, and no pool has two runs to admit; the second
half's landing, requested while the first half is being formatted, is what a larger pool can run
beside it (as in dp_assets_tests/test_ducklake_concurrency.py).

Also what run.py needs to start phases from one built state: ``Saved`` copies the data dir,
DAGSTER_HOME and, on a lake, its PostgreSQL catalog database, and puts them back in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from devserver import BIN, REPO, dagster_dev, graphql

DROPPED = 50
STAGGER_S = 20
ACTIVE = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
FAILED = ("FAILURE", "CANCELED")
RUNS = """{ runsOrError { ... on Runs { results {
    runId jobName status creationTime startTime endTime } } } }"""
SENSORS = """{ repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name
    sensorState { status ticks(limit: 1, statuses: [SKIPPED, SUCCESS, FAILURE]) {
        timestamp runIds } } } } } } }"""
FAILURES = """{ runOrError(runId: "%s") { ... on Run { eventConnection(limit: 100000) { events {
    __typename ... on ExecutionStepFailureEvent { stepKey error { message } }
    ... on RunFailureEvent { message } } } } } }"""


def hold_back(files: list[dict], sources: tuple[str, ...], inbox: Path, held: Path) -> list[dict]:
    """Move the ``DROPPED`` latest files (by arrival) of ``sources`` from the inbox into
    ``held/<source>/``; their manifest entries, oldest first."""
    daily = sorted(
        (f for f in files if f["source"] in sources),
        key=lambda f: (f["arrival"], f["source"], f["name"]),
    )[-DROPPED:]
    for f in daily:
        (held / f["source"]).mkdir(parents=True, exist_ok=True)
        shutil.move(inbox / f["source"] / f["name"], held / f["source"] / f["name"])  # keeps mtime
    return daily


class Saved:
    """A copy of the run's state under ``root``: the data dir (with a lake's Parquet files), the
    Dagster home and, for a ``postgres:`` lake catalog, the catalog database (copied as a template
    of the original: nothing may be connected to it then, and on a restore its connections are
    ended)."""

    def __init__(self, root: Path, name: str, lake_catalog: str = ""):
        self.root, self.copy = root, root / f"saved-{name}"
        self.server, self.database, self.template = None, "", ""
        if lake_catalog:
            from psycopg2.extensions import parse_dsn

            self.server = parse_dsn(lake_catalog.removeprefix("postgres:"))
            self.database = self.server["dbname"]
            self.template = f"{self.database}_saved_{name}"

    def _sql(self, *statements: str) -> None:
        import psycopg2

        conn = psycopg2.connect(**{**self.server, "dbname": "postgres"})
        conn.autocommit = True  # CREATE and DROP DATABASE refuse a transaction
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            conn.close()

    def save(self) -> None:
        for part in ("data", "home"):
            shutil.copytree(self.root / part, self.copy / part, symlinks=True)
        if self.server:
            self._sql(f'CREATE DATABASE "{self.template}" TEMPLATE "{self.database}"')

    def restore(self) -> None:
        for part in ("data", "home"):
            shutil.rmtree(self.root / part)
            shutil.copytree(self.copy / part, self.root / part, symlinks=True)
        if self.server:
            self._sql(
                f'DROP DATABASE "{self.database}" WITH (FORCE)',
                f'CREATE DATABASE "{self.database}" TEMPLATE "{self.template}"',
            )

    def remove(self) -> None:
        shutil.rmtree(self.copy)  # a failed removal shows: it would leave a copy of the data dir
        if self.server:
            self._sql(f'DROP DATABASE "{self.template}"')


def most_at_once(runs: list[dict]) -> int:
    """The most runs in progress at the same moment (an end before a start at the same instant)."""
    edges = sorted([(r["startTime"], 1) for r in runs] + [(r["endTime"], -1) for r in runs])
    most = now = 0
    for _, change in edges:
        now += change
        most = max(most, now)
    return most


def settled(port: int, after: float) -> bool:
    """No run queued or in progress, and every running sensor has finished a tick begun after
    ``after`` that started no run: nothing more is coming."""
    if any(r["status"] in ACTIVE for r in graphql(port, RUNS)["runsOrError"]["results"]):
        return False
    for repository in graphql(port, SENSORS)["repositoriesOrError"]["nodes"]:
        for sensor in repository["sensors"]:
            state = sensor["sensorState"]
            if state["status"] != "RUNNING":
                continue
            ticks = state["ticks"]
            if not ticks or ticks[0]["timestamp"] <= after or ticks[0]["runIds"]:
                return False
    return True


def failed_steps(port: int, run_id: str) -> dict[str, str]:
    """A failed run's failed steps, each with the last line of its error; ``run`` for a run that
    failed outside a step (its failure message)."""
    events = graphql(port, FAILURES % run_id)["runOrError"]["eventConnection"]["events"]
    steps = {
        e["stepKey"]: e["error"]["message"].strip().splitlines()[-1][:160]
        for e in events
        if e["__typename"] == "ExecutionStepFailureEvent"
    }
    ended = [e["message"][:160] for e in events if e["__typename"] == "RunFailureEvent"]
    return steps or {"run": ended[-1] if ended else "no failure event"}


def drop(env: dict, root: Path, files: list[dict], pool: int, timeout_s: float) -> dict:
    """One drop of ``files`` (manifest entries held in ``root/held``): the pool set as an operator
    sets it, `dagster dev` started and left to settle (every sensor ticked, no run), the files
    moved into the inbox in two halves, then waited on until ``settled`` again. Figures: ``wall`` from
    the drop to the end of its last run, ``runs`` (each ``jobName``, ``status``, start and end),
    ``most_at_once``, ``failures`` (failed steps by run), ``settled`` (False: ``timeout_s`` ran
    out first, and ``wall`` is that long) and ``settling``, the runs the sensors started before the
    drop (a retraining a failed drift check asks for, the hourly health)."""
    # The value stored in the instance wins over dagster.yaml's default_limit.
    subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", "warehouse", str(pool)],
        env=env, cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    # Copied next to the inbox first, so that the drop is a rename: no file seen half-written.
    inbox, staged = Path(env["DP_DATA_DIR"]) / "inbox", root / "staged"
    paths = [Path(f["source"]) / f["name"] for f in files]
    for path in paths:
        (staged / path.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "held" / path, staged / path)  # keeps the mtime
    with dagster_dev(env, root / f"dagster_dev-pool-{pool}.log") as port:
        started = time.time()
        deadline = time.monotonic() + 300
        while not settled(port, started):
            if time.monotonic() > deadline:
                raise RuntimeError("dagster dev did not settle in 5 minutes before the drop")
            time.sleep(3)
        every = graphql(port, RUNS)["runsOrError"]["results"]
        before = {r["runId"] for r in every}
        settling = [r for r in every if r["creationTime"] >= started]
        dropped_at = time.time()
        for i, path in enumerate(paths):
            if i == len(paths) // 2:
                time.sleep(STAGGER_S)
            os.rename(staged / path, inbox / path)
        deadline = time.monotonic() + timeout_s
        while True:
            time.sleep(5)
            waiting = [p for p in paths if (inbox / p).exists()]
            runs = [r for r in graphql(port, RUNS)["runsOrError"]["results"] if r["runId"] not in before]  # fmt: skip
            last_end = max([dropped_at, *(r["endTime"] or 0 for r in runs)])
            if not waiting and runs and settled(port, last_end):
                done = True
                break
            if time.monotonic() > deadline:
                done = False
                break
        failures = {r["runId"]: failed_steps(port, r["runId"]) for r in runs if r["status"] in FAILED}  # fmt: skip
    ended = [r for r in runs if r["startTime"] and r["endTime"]]
    return {
        "pool": pool,
        "settled": done,
        "wall": (last_end if done else time.time()) - dropped_at,
        "runs": runs,
        "most_at_once": most_at_once(ended),
        "failures": failures,
        "settling": settling,
    }
