"""The ``dp`` command: ``dp sample-data`` writes raw files into the inbox, ``dp summary`` reports."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from dp_assets.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sample = commands.add_parser(
        "sample-data",
        help="write realistic raw files (with known problems) into $DP_DATA_DIR/inbox",
    )
    sample.add_argument("--days", type=int, default=120, help="days of history (default 120)")
    sample.add_argument(
        "--meters", type=int, default=200, help="meters, one per customer (default 200)"
    )
    sample.add_argument(
        "--seed", type=int, default=7, help="random seed; same seed, same files (default 7)"
    )
    sample.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2024, 1, 15),
                        help="first day, YYYY-MM-DD (default 2024-01-15)")  # fmt: skip
    commands.add_parser("summary", help="tables with row counts, rejects, quarantined files")
    args = parser.parse_args(argv)
    settings = Settings.from_env()

    if args.command == "sample-data":
        from dp_assets.sample_data import SampleParams, generate

        if args.days < 3 or args.meters < 2:
            parser.error("--days must be at least 3 and --meters at least 2")
        manifest = generate(
            settings.data_dir, SampleParams(args.days, args.meters, args.seed, args.start)
        )
        print(
            f"wrote {len(manifest.files)} files into {settings.inbox} "
            f"({len(manifest.row_problems)} injected row problems, {len(manifest.file_problems)} "
            f"malformed files, {len(manifest.duplicate_deliveries)} duplicate deliveries); "
            f"ground truth in {settings.sample_manifest}"
        )
    elif args.command == "summary":
        from dp_assets.summary import summarize

        print(summarize(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
