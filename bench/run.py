"""Benchmark the platform at a scale: `python bench/run.py --scale S` (M and L are much larger).

Generates sample data into a temporary data dir, materializes every asset through the real defs
(the implicit asset job, as `dagster asset materialize -m dp_assets --select '*'` runs it), and
prints and writes to bench/results/ one table: wall time per asset step and in total, raw rows per
second, peak RSS, and the floor: DuckDB reading every raw file once.

Nothing here is asserted; the figures are for reading and comparing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCALES = {"S": (200, 60), "M": (2_000, 365), "L": (10_000, 365)}  # meters, days


def floor_seconds(inbox: Path) -> tuple[float, int]:
    """DuckDB reading every raw file once: the least any pipeline over these files must pay."""
    import duckdb

    started = time.perf_counter()
    rows = 0
    with duckdb.connect() as conn:
        for pattern, reader in (
            (
                "meters_vendor_a/*.csv",
                "read_csv('{}', delim=';', header=true, all_varchar=true, ignore_errors=true)",
            ),
            (
                "meters_vendor_b/*.jsonl",
                "read_json('{}', format='newline_delimited', ignore_errors=true)",
            ),
        ):
            if list(inbox.glob(pattern)):
                rows += conn.execute(
                    f"SELECT count(*) FROM {reader.format(inbox / pattern)}"
                ).fetchone()[0]
    return time.perf_counter() - started, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, default="S")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    meters, days = SCALES[args.scale]

    root = Path(tempfile.mkdtemp(prefix=f"dp-bench-{args.scale}-"))
    os.environ.update(
        DP_DATA_DIR=str(root / "data"), DAGSTER_HOME=str(root / "home"), DP_PII_KEY="bench"
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    (root / "home").mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", root / "home" / "dagster.yaml")
    sys.path.insert(0, str(REPO))

    from dagster import DagsterEventType, DagsterInstance

    from dp_assets.definitions import build_defs
    from dp_assets.sample_data import SampleParams, generate
    from dp_assets.settings import Settings

    settings = Settings.from_env()
    started = time.perf_counter()
    manifest = generate(settings.data_dir, SampleParams(days=days, meters=meters, seed=args.seed))
    generated = time.perf_counter() - started
    raw_rows = sum(f["records"] or 0 for f in manifest.files)
    floor, floor_rows = floor_seconds(settings.inbox)

    with DagsterInstance.get() as instance:
        job = build_defs(settings).resolve_implicit_global_asset_job_def()
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        total = time.perf_counter() - started
        steps = {}
        for record in instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.STEP_SUCCESS
        ).records:
            event = record.event_log_entry.dagster_event
            steps[event.step_key] = event.event_specific_data.duration_ms / 1000
        failures = {}
        for record in instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.STEP_FAILURE
        ).records:
            event = record.event_log_entry.dagster_event
            failures[event.step_key] = event.event_specific_data.error.message.strip().splitlines()[
                -1
            ][:200]
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    lines = [
        f"# dp_assets benchmark, scale {args.scale}: {meters:,} meters x {days} days, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"run {'succeeded' if result.success else 'FAILED'}; {len(manifest.files):,} files, {raw_rows:,} raw records",
        *[f"- failed step {step}: {message}" for step, message in failures.items()],
        "",
        "| step | seconds |",
        "|---|---:|",
        *[
            f"| {step} | {seconds:.2f} |"
            for step, seconds in sorted(steps.items(), key=lambda kv: -kv[1])
        ],
        f"| **total (wall)** | **{total:.2f}** |",
        f"| inside asset steps | {sum(steps.values()):.2f} |",
        f"| Dagster overhead (total - steps) | {total - sum(steps.values()):.2f} |",
        "",
        f"- raw records per second: {raw_rows / total:,.0f}",
        f"- floor (DuckDB reads the {floor_rows:,} meter rows once): {floor:.2f} s; total / floor: {total / floor:.1f}x",
        f"- peak RSS: {peak_rss_gb:.2f} GB",
        f"- sample generation: {generated:.1f} s",
    ]
    report = "\n".join(lines)
    print(report)
    out = REPO / "bench" / "results" / f"{args.scale}.md"
    out.write_text(report + "\n")
    print(f"\nwritten to {out}; data in {root}")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
