"""Formatting one large vendor file: `python bench/large_file.py [--mb 300] [--source ...]`.

Writes one file of about ``--mb`` MB in the vendor's own format (vendor A: CSV with `;`, decimal
comma, local time; vendor B: JSON Lines, epoch ms, Wh), with a duplicate key and a negative reading
every 10,000 records, into the inbox of a fresh data dir; lands it in one process, then formats it
in another (the real definitions, as `dagster asset materialize` runs them), and prints the
formatting process's peak RSS (``ru_maxrss``), its wall time and the step's time from the event
log. Each process starts after ``os.sync()``. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from run import measured, written_back  # noqa: E402 (the benchmark's own helpers)

DAY = dt.datetime(2024, 3, 5)  # no DST change: every local half hour exists once
PROBLEM_EVERY = 10_000


def vendor_file(source: str, records: int) -> bytes:
    """``records`` half-hourly readings of one day in the vendor's format, meter after meter."""
    i = pl.int_range(records, eager=True, dtype=pl.Int64)
    # Every PROBLEM_EVERY-th record repeats the one before it (a duplicate key); the one after it
    # is negative (rejected by the schema).
    i = pl.when(i % PROBLEM_EVERY == PROBLEM_EVERY - 1).then(i - 1).otherwise(i)
    frame = pl.select(n=i).with_columns(
        meter=(pl.col("n") // 48).cast(pl.String).str.zfill(6),
        start=pl.lit(DAY) + pl.duration(minutes=30 * (pl.col("n") % 48)),
        wh=pl.when(pl.col("n") % PROBLEM_EVERY == 1).then(-100).otherwise(pl.col("n") % 997),
    )
    if source == "meters_vendor_a":
        kwh = (pl.col("wh") / 1000).cast(pl.String).str.replace(".", ",", literal=True)
        line = pl.concat_str(
            "MTR-" + pl.col("meter"),
            pl.col("start").dt.strftime("%Y-%m-%d %H:%M"),
            kwh,
            separator=";",
        )
        header = "meter_id;timestamp;consumption_kwh\n"
    else:
        ts = (pl.col("start").dt.replace_time_zone("UTC").dt.epoch("ms")).cast(pl.String)
        line = pl.concat_str(
            pl.lit('{"meter": "'), "meter", pl.lit('", "ts": '), ts, pl.lit(', "wh": '),
            pl.col("wh").cast(pl.String), pl.lit("}"),
        )  # fmt: skip
        header = ""
    return (header + frame.select(line.str.join("\n")).item() + "\n").encode()


def materialize(selection: str, run_config: dict) -> None:
    """Materialize ``selection`` through the real definitions in this process; print the step's
    time (the event log's) as JSON."""
    from dagster import AssetSelection, DagsterEventType, DagsterInstance

    sys.path.insert(0, str(REPO))
    from dp_assets.definitions import defs

    selected = AssetSelection.from_string(selection).required_multi_asset_neighbors()
    keys = sorted(selected.resolve(defs.resolve_asset_graph()))
    with DagsterInstance.get() as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance, asset_selection=keys, run_config=run_config
        )
        records = instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.STEP_SUCCESS
        ).records
        steps = {
            r.event_log_entry.dagster_event.step_key: r.event_log_entry.dagster_event.event_specific_data.duration_ms
            / 1000
            for r in records
        }
    print(json.dumps(steps))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=300.0, help="size of the file, MB")
    parser.add_argument("--source", choices=("meters_vendor_a", "meters_vendor_b"), action="append")
    parser.add_argument(
        "--chunk-mb", type=float, help="formatting's chunk size, MB (default: the asset's own)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir afterwards")
    parser.add_argument("--run-config", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--materialize", help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        path, source, records = args.write
        Path(path).write_bytes(vendor_file(source, int(records)))
        return 0
    if args.materialize:
        materialize(args.materialize, json.loads(args.run_config))
        return 0
    for source in args.source or ("meters_vendor_a", "meters_vendor_b"):
        root = Path(tempfile.mkdtemp(prefix="dp-bench-large-"))
        env = {**os.environ, "DP_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "home"),
               "DP_PII_KEY": "bench"}  # fmt: skip
        env.pop("MLFLOW_TRACKING_URI", None)
        (root / "home").mkdir()
        shutil.copy(REPO / "dagster.yaml", root / "home" / "dagster.yaml")
        per_record = 34 if source == "meters_vendor_a" else 52  # bytes of one line, about
        records = int(args.mb * 1e6 / per_record)
        inbox = root / "data" / "inbox" / source
        inbox.mkdir(parents=True)
        path = inbox / f"large_{DAY:%Y%m%d}.{'csv' if source.endswith('a') else 'jsonl'}"
        # Written by a child: a child's ru_maxrss starts from its parent's size at the fork.
        measured([sys.executable, __file__, "--write", str(path), source, str(records)], env)
        size = path.stat().st_size
        me = [sys.executable, __file__, "--materialize"]
        written_back()
        _, land_s, land_gb = measured([*me, f'key:"landing/{source}"'], env)
        written_back()
        config = {"chunk_bytes": int(args.chunk_mb * 2**20)} if args.chunk_mb else {}
        run_config = {"ops": {f"formatted_{source}": {"config": config}}} if config else {}
        formatting = [*me, f'key:"formatted/{source}"', "--run-config", json.dumps(run_config)]
        out, wall, peak = measured(formatting, env)
        step = json.loads(out.strip().splitlines()[-1])[f"formatted_{source}"]
        print(
            f"{source}: {size / 1e6:,.0f} MB, {records:,} records | landing {land_s:.1f} s, "
            f"{land_gb:.2f} GB | formatting: peak RSS {peak:.2f} GB, process {wall:.1f} s, "
            f"step {step:.1f} s",
            flush=True,
        )
        if args.keep:
            print(f"  kept {root}")
        else:
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
