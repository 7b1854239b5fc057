"""How much the platform's signals cry wolf: `python bench/signals.py [--minutes 5] [--demos 3]`.

On a fresh data dir and Dagster instance (temporary, or ``--data-dir``):

1. `make demo` once, then every asset check's latest evaluation: how many fail, by severity;
2. `dagster dev` (webserver and daemon, as `make ui` starts it) for ``--minutes``: the runs the
   sensors and automation start meanwhile (retraining ones are tagged ``dp/retrain_reason``), and
   the failing checks again after it;
3. `make demo` again, ``--demos`` runs in all, on the same data dir: the model versions each
   pipeline's registry holds after each (unchanged data should register nothing new).

Prints one table and writes it to bench/results/signals.md. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devserver import REPO, dagster_dev


def demo(env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(["make", "demo"], env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        print(result.stdout[-3000:], result.stderr[-3000:], sep="\n")
    return time.perf_counter() - started


def inspect(env: dict, code: str) -> str:
    """Run ``code`` in a fresh interpreter with the benchmark's environment (the instance and
    settings are read from it): what a user's own process would see."""
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


FAILING = """
from dp_assets.settings import Settings
from dp_assets.summary import failing_checks
for check in failing_checks(Settings.from_env()):
    print(check.severity, check.check, check.description[:160], sep="\\t")
"""

VERSIONS = """
import mlflow
from dp_assets.settings import Settings
settings = Settings.from_env()
client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
for name in settings.catalog().pipelines:
    print(name, len(client.search_model_versions(f"name = '{name}'")), sep="\\t")
"""

RUNS = """
import sys
from dagster import DagsterInstance, RunsFilter
import datetime as dt
since = dt.datetime.fromtimestamp(float(sys.argv[1]), dt.UTC)
with DagsterInstance.get() as instance:
    for run in instance.get_runs(filters=RunsFilter(created_after=since)):
        print(run.status.value, run.tags.get("dp/retrain_reason", ""),
              ",".join(sorted(k.to_user_string() for k in run.asset_selection or [])), sep="\\t")
"""


def failing(env: dict) -> list[list[str]]:
    return [line.split("\t") for line in inspect(env, FAILING).splitlines()]


def versions(env: dict) -> dict[str, int]:
    return {
        n: int(v) for n, v in (line.split("\t") for line in inspect(env, VERSIONS).splitlines())
    }


def ui_session(env: dict, minutes: float, log: Path) -> list[list[str]]:
    """`dagster dev` for ``minutes`` from when it answers: the runs started meanwhile."""
    started = time.time()
    with dagster_dev(env, log):
        time.sleep(minutes * 60)
    runs = inspect(env, RUNS.replace("sys.argv[1]", repr(str(started))))
    return [line.split("\t") for line in runs.splitlines()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="of dagster dev (default 5)")
    parser.add_argument("--demos", type=int, default=3, help="make demo runs in all (default 3)")
    parser.add_argument("--data-dir", type=Path, help="default: a temporary one, removed after")
    args = parser.parse_args()
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="dp-signals-"))
    env = {**os.environ, "DP_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster_home")}
    env.pop("DP_PROJECT", None)  # the default project, as a new user's demo
    lines = []
    try:
        seconds = demo(env)
        after_demo, registered = failing(env), [versions(env)]
        lines.append(f"demo 1: {seconds:.0f} s; versions {registered[0]}")
        runs = ui_session(env, args.minutes, data / "dagster_dev.log")
        after_ui = failing(env)
        for n in range(2, args.demos + 1):
            seconds = demo(env)
            registered.append(versions(env))
            lines.append(f"demo {n}: {seconds:.0f} s; versions {registered[-1]}")
    finally:
        if args.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)

    def checks(title: str, rows: list[list[str]]) -> list[str]:
        by = {s: sum(r[0] == s for r in rows) for s in ("ERROR", "WARN")}
        return [f"{title}: {len(rows)} failing ({by['ERROR']} error, {by['WARN']} warn)"] + [
            f"  {' | '.join(r)}" for r in rows
        ]

    retrains = [r for r in runs if r[1]]
    report = [
        *checks("checks after the demo", after_demo),
        *checks(f"checks after {args.minutes:g} min of dagster dev", after_ui),
        f"runs started by {args.minutes:g} min of dagster dev: {len(runs)}, retraining {len(retrains)}",
        *(f"  {' | '.join(r)}" for r in runs),
        *lines,
    ]
    print("\n".join(report))
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "signals.md").write_text(
        "# bench/signals.py\n\n```\n" + "\n".join(report) + "\n```\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
