"""Benchmark the platform at a scale: `python bench/run.py --scale S|M|L`.

One run, each phase in its own process so its peak RSS is its own:

1. generate the sample data (`dp sample-data`, one day more than the scale; in parts of 2,000
   meters, two at a time), holding back the 50 latest meter and weather files (by arrival; four
   a day in one part, so about 13 days at S and M): the floors, the baseline and the full build
   see that much less history than in results before the drop was measured, which held back only
   the last day (not comparable: their full build at M had about 12 days more);
2. the floors: DuckDB reading every raw meter file once (a count over read_csv and read_json),
   then reading and typing the same files of each source the formatted zone formats as one query
   (vendor A's decimal comma and Warsaw local time converted to UTC, vendor B's epoch ms and Wh,
   weather's documents unnested, Fahrenheit converted), against which that source's formatting
   step in the full build is compared; customers and tariffs, two small files a day, are left out;
3. the pandas baseline (`bench/baseline_pandas.py`) on the same files (up to M: beyond, it would
   hold the whole dataset in memory);
4. the full build: every asset through the real defs, as `dagster asset materialize --select '*'`
   runs it, with wall time per step from the event log; what it left (the data dir, the Dagster
   home, a lake's catalog database) is saved, and the next phases start from it;
5. the 50-file drop (``bench/drop.py``), once per pool size: `dagster dev` (webserver and daemon,
   the instance of `make ui`, on a lake deploy/dagster-ducklake.yaml's) with the `warehouse` pool
   set to that size, the held files moved into the inbox in two halves 20 s apart; the wall
   seconds from the first drop to the end of the last run the sensors and automation started
   (until none is queued or in progress and every sensor has ticked since without starting one),
   those runs, the failed ones with their failed steps, and the most runs in progress at once. The DuckDB file has pool 1 (it
   admits one writer process); a lake the sizes of ``--pools`` (1 and 3);
6. incremental: the held files but the last day's land first, untimed (the catch-up, the same
   run as below), then the last day's files land and what automation follows a landing with runs
   (`following_new_data`: not training, the hourly health or the data dictionary); `--repeat`
   times (3), each on a copy of what the catch-up left, reporting the median;
7. serving: p50/p99 latency of one prediction through MLflow's scoring server (one worker per core,
   at most four, as `make serve` starts it) with 20 concurrent clients on 127.0.0.1, against the
   same model's in-process predict time.

Before each timed phase (2 to 6) the page cache is written back (``os.sync``), so that no phase
pays for the writeback of what the one before it wrote; a day's run comes long after the last.

``--warehouse ducklake --lake-catalog 'postgres:dbname=... host=...'`` runs every phase on a DuckLake
(an empty PostgreSQL database that the run's user may copy and drop, on a server where it may
create databases: the saved state keeps a copy of it; the Parquet files go under the run's data
dir) instead of the DuckDB file.

Prints the tables (the measures, the drop with a column per pool, the formatted zone against its
floor, the seconds per step) and writes them to bench/results/<scale>.md (``<scale>-ducklake.md``
on a lake); every failed step of a timed run, of the catch-up and of the drop's runs is listed
above them. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from drop import DROPPED, STAGGER_S, Saved, drop, hold_back

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCALES = {"S": (200, 60), "M": (2_000, 365), "L": (10_000, 365)}  # meters, days
HELD_BACK = ("meters_vendor_a", "meters_vendor_b", "weather")  # sources with a file per day
CLIENTS, REQUESTS_PER_CLIENT = 20, 50
WORKERS = min(os.cpu_count() or 1, 4)  # scoring-server processes, as `make serve` starts them
PART_METERS = 2_000  # the generator writes larger worlds in parts of this many meters
GENERATORS = 2  # parts generated at once (each holds its part in memory)
BASELINE_MAX_METERS = 2_000


def measured(args: list[str], env: dict, capture: bool = True) -> tuple[str, float, float]:
    """Run a process to its end: (stdout, wall seconds, its own peak RSS in GB)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.PIPE if capture else None, text=True
    )
    out = process.stdout.read() if capture else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{args[:3]} failed with {process.returncode}:\n{out[-3000:]}")
    return out, time.perf_counter() - started, usage.ru_maxrss / 1024**2


def measured_together(commands: list[list[str]], env: dict) -> list[float]:
    """Run the commands, ``GENERATORS`` at a time; the peak RSS of each, in GB."""
    peaks, queue = [], list(commands)
    while queue:
        batch, queue = queue[:GENERATORS], queue[GENERATORS:]
        processes = [
            subprocess.Popen(c, env=env, cwd=REPO, stdout=subprocess.DEVNULL) for c in batch
        ]
        for process in processes:
            _, status, usage = os.wait4(process.pid, 0)
            if os.waitstatus_to_exitcode(status):
                raise SystemExit(f"{process.args[:4]} failed")
            peaks.append(usage.ru_maxrss / 1024**2)
    return peaks


def written_back() -> float:
    """Write the page cache's dirty pages to disk (``os.sync``) before a timed phase, so that it
    does not pay for the writeback of what the phase before it wrote; the seconds that took."""
    started = time.perf_counter()
    os.sync()
    return time.perf_counter() - started


def of_day(f: dict, day: dt.date) -> bool:
    """Whether a sample file (a manifest entry) holds that day's data: the date its name starts
    with (a vendor's local-time file may reach into the next day)."""
    return "".join(c for c in Path(f["name"]).stem if c.isdigit()).startswith(f"{day:%Y%m%d}")


def unheld(root: Path, files: list[dict]) -> None:
    """Copy these held files (manifest entries) into the inbox, keeping their mtimes."""
    for f in files:
        shutil.copy2(root / "held" / f["source"] / f["name"], root / "data" / "inbox" / f["source"])


def floor_seconds(inbox: Path) -> tuple[float, int]:
    """DuckDB reading every raw meter file once: the least any pipeline over these files pays."""
    import duckdb

    started = time.perf_counter()
    rows = 0
    with duckdb.connect() as conn:
        for pattern, reader in (
            ("meters_vendor_a/*.csv",
             "read_csv('{}', delim=';', header=true, all_varchar=true, ignore_errors=true)"),
            ("meters_vendor_b/*.jsonl", "read_json('{}', format='newline_delimited', ignore_errors=true)"),
        ):  # fmt: skip
            if list(inbox.glob(pattern)):
                query = f"SELECT count(*) FROM {reader.format(inbox / pattern)}"
                rows += conn.execute(query).fetchone()[0]
    return time.perf_counter() - started, rows


# Each source's raw files (a pattern under the inbox) read and typed as its formatted step types
# them, one query per source over {files}, with the sample data's malformed records or files skipped,
# not rejected with a reason. Vendor A is not sniffed: a resend with another delimiter fails it.
TYPED_READS = {
    "meters_vendor_a": (
        "meters_vendor_a/*.csv",
        """
        SELECT meter_id, timezone('UTC', timezone('Europe/Warsaw', "timestamp")) AS reading_start,
               consumption_kwh AS kwh
        FROM read_csv('{files}', auto_detect=false, header=true, delim=';', quote='',
                      decimal_separator=',', timestampformat='%Y-%m-%d %H:%M',
                      columns={{'meter_id': 'VARCHAR', 'timestamp': 'TIMESTAMP',
                               'consumption_kwh': 'DOUBLE'}}, ignore_errors=true)""",
    ),
    "meters_vendor_b": (
        "meters_vendor_b/*.jsonl",
        """
        SELECT 'MTR-' || meter AS meter_id, make_timestamp(ts * 1000) AS reading_start,
               coalesce(wh, energy_wh) * 0.001::DOUBLE AS kwh
        FROM read_json('{files}', format='newline_delimited',
                       columns={{'meter': 'VARCHAR', 'ts': 'BIGINT', 'wh': 'BIGINT',
                                'energy_wh': 'BIGINT'}}, ignore_errors=true)""",
    ),
    # read_json cannot skip a truncated document (only newline-delimited errors can be ignored):
    # the documents are read as text, and the invalid ones left out.
    "weather": (
        "weather/*.json",
        """
        SELECT doc.provider, o.region, o.time AS observed_at, o.humidity AS humidity_pct,
               CASE doc.units.temperature WHEN 'F' THEN (o.temperature - 32) * 5 / 9
                    ELSE o.temperature END AS temperature_c
        FROM (SELECT doc, unnest(doc.observations) AS o
              FROM (SELECT from_json(content, '{{"provider": "VARCHAR",
                        "units": {{"temperature": "VARCHAR"}}, "observations": [{{"region": "VARCHAR",
                        "time": "TIMESTAMPTZ", "temperature": "DOUBLE", "humidity": "DOUBLE"}}]}}') AS doc
                    FROM read_text('{files}') WHERE json_valid(content)))""",
    ),
}


def typed_floor_seconds(inbox: Path) -> dict[str, tuple[float, int]]:
    """DuckDB reading and typing each source's raw files once: (seconds, rows) per source that
    has files."""
    import duckdb

    floors = {}
    with duckdb.connect() as conn:
        for source, (pattern, query) in TYPED_READS.items():
            if not list(inbox.glob(pattern)):
                continue
            started = time.perf_counter()
            # max of every column: each value computed, not only counted.
            rows = conn.execute(
                f"SELECT count(*), max(COLUMNS(*)) FROM ({query.format(files=inbox / pattern)})"
            ).fetchone()[0]
            floors[source] = (time.perf_counter() - started, rows)
    return floors


def materialize(followers_only: bool) -> None:
    """The full graph in this process, or what runs after a landing: the landing, then what
    automation follows it with (not training, the hourly health or the data dictionary); prints
    the run's step times as JSON."""
    from dagster import AssetSelection, DagsterEventType, DagsterInstance

    sys.path.insert(0, str(REPO))
    from dp_assets.automation import following_new_data
    from dp_assets.definitions import defs  # built from the environment once, as the CLI does
    from dp_assets.settings import Settings

    selection = None
    if followers_only:
        pipelines = list(Settings.from_env().catalog().pipelines.values())
        landed = AssetSelection.groups("landing") | following_new_data(pipelines)
        selection = sorted(landed.resolve(defs.resolve_asset_graph()))
    with DagsterInstance.get() as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance, asset_selection=selection, raise_on_error=False
        )
        total = time.perf_counter() - started

        def events(kind):
            records = instance.get_records_for_run(result.run_id, of_type=kind, limit=100_000)
            return [r.event_log_entry.dagster_event for r in records.records]

        steps = {e.step_key: e.event_specific_data.duration_ms / 1000
                 for e in events(DagsterEventType.STEP_SUCCESS)}  # fmt: skip
        failures = {
            e.step_key: e.event_specific_data.error.message.strip().splitlines()[-1][:160]
            for e in events(DagsterEventType.STEP_FAILURE)
        }
    print(json.dumps({"total": total, "steps": steps, "failures": failures}))


def serving(data_dir: Path, env: dict) -> dict:
    """Latency of one prediction: through the scoring server under 20 clients, and in process."""
    import mlflow.lightgbm
    import numpy as np

    sys.path.insert(0, str(REPO))
    from dp_assets.analysis.factory import feature_matrix
    from dp_assets.resources import Warehouse
    from dp_assets.settings import Settings

    spec = Settings.from_env().catalog().pipelines["energy_forecast"]
    settings = Settings(data_dir, warehouse_backend=env["DP_WAREHOUSE"],
                        lake_catalog=env.get("DP_LAKE_CATALOG", ""))  # fmt: skip
    row = Warehouse.from_settings(settings).query(
        "SELECT * FROM energy_forecast.features WHERE split = 'score' LIMIT 1"
    )
    x = feature_matrix(row, spec)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    # The newest registered version: latency does not depend on whether the gate promoted it.
    versions = mlflow.MlflowClient().search_model_versions("name = 'energy_forecast'")
    uri = f"models:/energy_forecast/{max(int(v.version) for v in versions)}"
    model = mlflow.lightgbm.load_model(uri)
    in_process = []
    for _ in range(1000):
        started = time.perf_counter()
        model.predict(x)
        in_process.append(time.perf_counter() - started)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", uri, "-h", "127.0.0.1", "-p", str(port),
         "-w", str(WORKERS), "--env-manager", "local"],
        env={**env, "PATH": f"{BIN}:{env['PATH']}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    body = json.dumps({"dataframe_split": json.loads(x.to_json(orient="split", index=False))})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("scoring server did not start") from None
                time.sleep(0.5)
        latencies: list[float] = []
        lock = threading.Lock()

        def client():
            mine = []
            for _ in range(REQUESTS_PER_CLIENT):
                request = urllib.request.Request(f"{url}/invocations", data=body.encode(),
                                                 headers={"Content-Type": "application/json"})  # fmt: skip
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        os.killpg(server.pid, 9)
        server.wait()
    ms = np.array(latencies) * 1000
    return {
        "workers": WORKERS,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests": len(ms),
        "per_second": len(ms) / elapsed,
        "in_process_p50_ms": float(np.percentile(np.array(in_process) * 1000, 50)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, default="S")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="incremental runs, each on a copy of what the catch-up left (the disk needs room "
        "for one more copy of the data dir: the full build's for the drops, then this one)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir afterwards")
    parser.add_argument("--warehouse", choices=("duckdb", "ducklake"), default="duckdb")
    parser.add_argument(
        "--lake-catalog",
        help="with --warehouse ducklake: an empty PostgreSQL catalog (postgres:...)",
    )
    parser.add_argument(
        "--pools",
        help="on a lake, the warehouse pool sizes of the drop, comma-separated (default 1,3); "
        "the DuckDB file takes 1 only",
    )
    parser.add_argument(
        "--drop-minutes", type=float, default=30, help="how long a drop may take (default 30)"
    )
    parser.add_argument("--materialize", choices=("all", "followers"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if (args.warehouse == "ducklake") != bool(args.lake_catalog):
        parser.error("--lake-catalog goes with --warehouse ducklake, and only with it")
    if args.lake_catalog and not args.lake_catalog.startswith("postgres:"):
        parser.error(
            "--lake-catalog: a PostgreSQL catalog (postgres:...), which the drop's runs share"
        )
    if not args.lake_catalog and args.pools not in (None, "1"):
        parser.error("--pools: the DuckDB file admits one writer process, so pool 1 only")
    pools = [int(n) for n in (args.pools or ("1,3" if args.lake_catalog else "1")).split(",")]
    if args.materialize:
        materialize(args.materialize == "followers")
        return 0
    meters, days = SCALES[args.scale]
    start = dt.date(2024, 1, 15)

    root = Path(tempfile.mkdtemp(prefix=f"dp-bench-{args.scale}-"))
    data = root / "data"
    env = {**os.environ, "DP_DATA_DIR": str(data), "DAGSTER_HOME": str(root / "home"),
           "DP_PII_KEY": "bench"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)  # the platform's default: SQLite in the data dir
    env["DP_WAREHOUSE"] = args.warehouse
    env.pop("DP_LAKE_DATA_PATH", None)  # the lake's Parquet files in the data dir, saved with it
    instance = REPO / "dagster.yaml"
    if args.lake_catalog:
        env["DP_LAKE_CATALOG"] = args.lake_catalog
        instance = REPO / "deploy" / "dagster-ducklake.yaml"
    (root / "home").mkdir(parents=True)
    shutil.copy(instance, root / "home" / "dagster.yaml")
    figures: dict = {}

    parts = -(-meters // PART_METERS)
    print(f"generating {meters:,} meters x {days + 1} days in {parts} part(s) into {data} ...",
          flush=True)  # fmt: skip
    started = time.perf_counter()
    figures["generate_gb"] = max(measured_together([
        [str(BIN / "dp"), "sample-data", "--meters", str(min(meters, PART_METERS)),
         "--days", str(days + 1), "--seed", str(args.seed), "--start", start.isoformat(),
         "--part", str(part)]
        for part in range(parts)
    ], env))  # fmt: skip
    figures["generate_s"] = time.perf_counter() - started
    manifests = [json.loads(p.read_text()) for p in data.glob("sample_data_manifest*.json")]
    files = [f for m in manifests for f in m["files"]]
    raw_rows = sum(f["records"] or 0 for f in files)
    held = hold_back(files, HELD_BACK, data / "inbox", root / "held")
    last_day = [f for f in held if of_day(f, start + dt.timedelta(days=days))]
    catch_up = [f for f in held if f not in last_day]
    syncs = {"floor": written_back()}
    figures["floor_s"], figures["floor_rows"] = floor_seconds(data / "inbox")
    print("typed floor ...", flush=True)
    typed = typed_floor_seconds(data / "inbox")

    baseline = None
    if meters <= BASELINE_MAX_METERS:  # beyond, pandas needs the whole dataset in memory
        print("pandas baseline ...", flush=True)
        syncs["pandas baseline"] = written_back()
        out, figures["pandas_s"], figures["pandas_gb"] = measured(
            [sys.executable, str(REPO / "bench" / "baseline_pandas.py"), str(data / "inbox")],
            {**env, "PYTHONWARNINGS": "ignore"},
        )
        baseline = json.loads(out.strip().splitlines()[-1])

    def timed(phase: str, what: str) -> dict:
        print(f"{phase} ...", flush=True)
        syncs[phase] = max(syncs.get(phase, 0.0), written_back())
        out, wall, rss = measured([sys.executable, __file__, "--materialize", what], env)
        return {
            "phase": phase,
            "wall": wall,
            "rss": rss,
            **json.loads(out.strip().splitlines()[-1]),
        }

    full = timed("full build", "all")
    built = Saved(root, "full-build", args.lake_catalog or "")
    built.save()
    drops = []
    for pool in pools:
        if drops:  # the first starts from the state just saved
            built.restore()
        phase = f"drop, pool {pool}"
        print(f"{DROPPED} files dropped, pool {pool} ...", flush=True)
        syncs[phase] = written_back()
        drops.append(drop(env, root, held, pool, args.drop_minutes * 60))

    # The one more day comes after the catch-up: the held files of the days before it.
    built.restore()
    built.remove()
    unheld(root, catch_up)
    print("catch-up (untimed) ...", flush=True)
    out, _, _ = measured([sys.executable, __file__, "--materialize", "followers"], env)
    caught_up = {"phase": "catch-up (untimed)", **json.loads(out.strip().splitlines()[-1])}
    # The day's run is short, and on this machine its time swings by a third or more from one run
    # to the next: it runs --repeat times, each on a copy of what the catch-up left; the median
    # counts.
    kept = Saved(root, "catch-up", args.lake_catalog or "") if args.repeat > 1 else None
    if kept:  # a single run needs no copy
        kept.save()
    day_runs = []
    for attempt in range(args.repeat):
        if attempt:
            kept.restore()
        unheld(root, last_day)
        day_runs.append(timed("incremental (one more day)", "followers"))
    if kept:
        kept.remove()
    incremental = sorted(day_runs, key=lambda run: run["wall"])[len(day_runs) // 2]
    runs = [full, incremental]

    print("serving ...", flush=True)
    served = None
    if "energy_forecast__model" in runs[0]["steps"]:
        served = serving(data, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}"})

    inside = sum(full["steps"].values())
    vendors = ("meters_vendor_a", "meters_vendor_b")
    vendors_typed_s = sum(typed[v][0] for v in vendors)
    vendors_typed_rows = sum(typed[v][1] for v in vendors)
    # A failed or skipped formatting step counts as 0 s; the failure is listed above the table.
    vendors_formatted_s = sum(full["steps"].get(f"formatted_{v}", 0.0) for v in vendors)
    arrivals = sorted({f["arrival"][:10] for f in held})
    drop_failures = []
    for d in drops:
        failed = {}  # step: (runs it failed in, its last message)
        for steps in d["failures"].values():
            for step, message in steps.items():
                failed[step] = (failed.get(step, (0, ""))[0] + 1, message)
        drop_failures += [f"- drop, pool {d['pool']}: failed step {step} in {n} of "
                          f"{len(d['runs'])} runs: {message}" for step, (n, message) in failed.items()]  # fmt: skip
        if not d["settled"]:
            drop_failures.append(f"- drop, pool {d['pool']}: not settled after {args.drop_minutes:g} min")  # fmt: skip
    lines = [
        f"# dp_assets benchmark, scale {args.scale}, warehouse {args.warehouse}: {meters:,} meters x {days} days "
        f"(+1 incremental), {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{len(files):,} files, {raw_rows:,} raw records; the {len(held)} latest meter and weather "
        f"files (arriving on {len(arrivals)} days, {arrivals[0]} to {arrivals[-1]}) held back "
        f"before the full build, for the drop; then {len(catch_up)} of them landed untimed (the "
        f"catch-up) and the last day's {len(last_day)} for the incremental run. Machine: 2 cores, "
        "24 GB, shared. Before each timed phase the page cache was written back (os.sync), taking "
        "at most "
        + ", ".join(f"{seconds:.2f} s before the {phase}" for phase, seconds in syncs.items())
        + ".",
        *[f"- {r['phase']}: failed step {s}: {m}"
          for r in (full, caught_up, incremental) for s, m in r["failures"].items()],
        *drop_failures,
        "",
        "| measure | value |",
        "|---|---:|",
        f"| full build, wall (materialize process) | {full['wall']:.1f} s |",
        f"| full build, inside asset steps | {inside:.1f} s |",
        f"| Dagster overhead (run total - steps) | {full['total'] - inside:.1f} s |",
        f"| raw records per second (full build) | {raw_rows / full['wall']:,.0f} |",
        f"| peak RSS, full build | {full['rss']:.2f} GB |",
        f"| floor: DuckDB reads the {figures['floor_rows']:,} meter rows once | {figures['floor_s']:.1f} s |",
        f"| **full build / floor** | **{full['wall'] / figures['floor_s']:.1f}x** |",
        f"| typed floor: DuckDB reads and types the {vendors_typed_rows:,} meter rows once | {vendors_typed_s:.1f} s |",
        f"| formatting both vendors (full build) | {vendors_formatted_s:.1f} s |",
        f"| **formatting both vendors / typed floor** | **{vendors_formatted_s / vendors_typed_s:.1f}x** |",
        f"| incremental run (one more day), wall: median of {len(day_runs)} | {incremental['wall']:.1f} s "
        f"({min(r['wall'] for r in day_runs):.1f} to {max(r['wall'] for r in day_runs):.1f} s) |",
        f"| **incremental / full build** | **{incremental['wall'] / full['wall']:.1%}** |",
        f"| peak RSS, incremental | {incremental['rss']:.2f} GB |",
        f"| sample generation, wall / peak RSS per part | {figures['generate_s']:.1f} s / {figures['generate_gb']:.2f} GB |",
    ]  # fmt: skip
    if baseline:
        lines += [
            f"| pandas baseline, wall (MAE {baseline['mae']}) | {figures['pandas_s']:.1f} s |",
            f"| pandas baseline, peak RSS | {figures['pandas_gb']:.2f} GB |",
            f"| **pandas baseline / full build** | **{figures['pandas_s'] / full['wall']:.2f}x** |",
        ]
    else:
        lines.append("| pandas baseline | not run: it holds the whole dataset in memory |")
    if served:
        lines += [
            f"| serving: p50 / p99, {CLIENTS} concurrent clients, {served['workers']} server workers | {served['p50_ms']:.1f} / {served['p99_ms']:.1f} ms |",
            f"| serving: throughput ({served['requests']} requests) | {served['per_second']:.0f} /s |",
            f"| in-process predict of one row, p50 | {served['in_process_p50_ms']:.2f} ms |",
        ]  # fmt: skip
    lines += [
        "",
        f"## {DROPPED} files dropped while `dagster dev` runs",
        "",
        "On the full build's state, with the `warehouse` pool at each size (`dagster instance "
        "concurrency set warehouse N`), once `dagster dev` has settled (every sensor ticked, no "
        f"run in progress), the held files moved into the inbox in two halves {STAGGER_S} s apart; "
        "from the first drop to the end of the last run they led to.",
        "",
        "| measure | " + " | ".join(f"pool {d['pool']}" for d in drops) + " |",
        "|---|" + "---:|" * len(drops),
        "| first drop to the last run's end | " + " | ".join(
            f"{d['wall']:.1f} s" if d["settled"] else f"> {d['wall']:.0f} s (not settled)"
            for d in drops) + " |",
        "| runs (of them `land`) | " + " | ".join(
            f"{len(d['runs'])} ({sum(r['jobName'] == 'land' for r in d['runs'])})"
            for d in drops) + " |",
        "| failed runs | " + " | ".join(str(len(d["failures"])) for d in drops) + " |",
        "| runs before the drop, while `dagster dev` settled | " + " | ".join(
            ", ".join(f"{n} `{job}`" for job, n in Counter(r["jobName"] for r in d["settling"]).items()) or "0"
            for d in drops) + " |",
        "| most runs in progress at once | " + " | ".join(str(d["most_at_once"]) for d in drops) + " |",
    ]  # fmt: skip
    lines += [
        "",
        "## formatted zone against the typed floor",
        "",
        "| source | rows typed | typed floor | formatting step (full build) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for source, (seconds, rows) in typed.items():
        step = full["steps"].get(f"formatted_{source}")
        cells = ("-", "-") if step is None else (f"{step:.1f} s", f"{step / seconds:.1f}x")
        lines.append(f"| {source} | {rows:,} | {seconds:.2f} s | {' | '.join(cells)} |")
    lines.append(
        f"| both vendors | {vendors_typed_rows:,} | {vendors_typed_s:.2f} s | "
        f"{vendors_formatted_s:.1f} s | {vendors_formatted_s / vendors_typed_s:.1f}x |"
    )
    # Every step of either run, slowest in the full build first; "-": not run (skipped or failed).
    lines += [
        "",
        "## seconds per step",
        "",
        "| step | full build | one more day |",
        "|---|---:|---:|",
    ]
    for step in sorted(full["steps"].keys() | incremental["steps"].keys(),
                       key=lambda s: (-full["steps"].get(s, 0.0), s)):  # fmt: skip
        cells = [f"{run['steps'][step]:.2f}" if step in run["steps"] else "-" for run in runs]
        lines.append(f"| {step} | {' | '.join(cells)} |")
    totals = " | ".join(f"{sum(run['steps'].values()):.2f}" for run in runs)
    lines.append(f"| all steps | {totals} |")
    if baseline:
        lines += ["", f"pandas baseline steps (s): {baseline['steps']}"]
    report = "\n".join(lines)
    print(report)
    suffix = "" if args.warehouse == "duckdb" else f"-{args.warehouse}"
    out_path = REPO / "bench" / "results" / f"{args.scale}{suffix}.md"
    out_path.write_text(report + "\n")
    print(f"\nwritten to {out_path}; data in {root}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if any(r["failures"] for r in (full, caught_up, incremental)) or drop_failures else 0


if __name__ == "__main__":
    sys.exit(main())
