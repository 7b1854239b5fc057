"""The ``dp`` command: sample data, the warehouse's state (summary, failing checks, quarantine),
the HTML report, project scaffolding and erasure. ``dp <command> --help`` says what each does,
with an example."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from dp_assets.settings import Settings

EPILOG = """examples:
  dp sample-data --days 100 --meters 40 --seed 3
  dp summary
  dp checks
  dp quarantine ack tariffs tariffs_empty.csv --reason "sent by mistake, resent as tariffs.csv"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dp",
        description="The data platform's command line: sample data, what the warehouse holds, "
        "failing checks, the quarantine, the report, new projects, erasure.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def command(name: str, purpose: str, example: str, **kwargs) -> argparse.ArgumentParser:
        # The purpose is the line `dp --help` lists; `dp <name> --help` adds the example.
        return commands.add_parser(
            name,
            help=purpose,
            description=f"{purpose}.\n\nexample:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )

    commands.add_parser(
        "sample-data",
        # Its options are the serving project's own (the sample utility's: --days, --meters, ...).
        add_help=False,
        help="write sample raw files (with known problems) into $DP_DATA_DIR/inbox, by the "
        "projects that define sample data; `dp sample-data --help` lists their options",
    )
    init = command(
        "init",
        "create an empty project folder (project.yaml, sources/, views/, pipelines/); serve it "
        "with DP_PROJECT=<folder> (several: DP_PROJECT=utility:<folder>)",
        "dp init ~/projects/grid",
    )
    init.add_argument("folder", type=Path, help="the project folder (created)")
    init.add_argument("--name", help="project name (default: the folder's, made an identifier)")
    add = command(
        "add-source",
        "scaffold sources/<name>.yaml from a sample file (delimiter, header, types, nulls) to edit",
        "dp add-source ~/projects/grid pjm_load --sample PJME_hourly.csv",
    )
    add.add_argument("folder", type=Path, help="the project folder")
    add.add_argument("source", help="source name (lower-case, digits, _): also its inbox folder")
    add.add_argument("--sample", type=Path, required=True, help="a sample raw file")
    command(
        "project",
        "list the projects served (DP_PROJECT) and the sources, views and pipelines found",
        "DP_PROJECT=~/projects/grid dp project",
    )
    command(
        "summary",
        "print the tables with row counts, rejects, open quarantine, models and failing checks",
        "dp summary",
    )
    command(
        "checks",
        "list the checks whose latest evaluation failed, with severity and reason; exits 1 when "
        "one of severity ERROR fails",
        "dp checks",
    )
    quarantine = command(
        "quarantine",
        "list the quarantined files still open, or acknowledge one (ack) so its check passes",
        'dp quarantine ack tariffs tariffs_empty.csv --reason "sent by mistake"',
    )
    acts = quarantine.add_subparsers(dest="action", metavar="<action>")
    acts.add_parser("list", help="the open quarantined files (the default)")
    ack = acts.add_parser(
        "ack",
        help="record that a quarantined file needs nothing more (kept in landing.quarantine_acks)",
        description="Acknowledge a quarantined file: who, when and why go to "
        "landing.quarantine_acks, and its source's no_quarantined_files check passes once "
        "nothing else is open. A file delivered again fixed under the same name needs no ack.",
    )
    ack.add_argument(
        "source", help="the source (inbox folder) it was delivered to; _unknown for strays"
    )
    ack.add_argument(
        "file", help="its name as delivered (or the first 8+ characters of its SHA-256)"
    )
    ack.add_argument("--reason", required=True, help="why it needs nothing more (kept for audit)")
    ack.add_argument("--by", default=getpass.getuser(), help="who (default: your user name)")
    report = command(
        "report",
        "write one HTML page: data quality, drift, model accuracy over time, KPIs",
        "dp report --output /tmp/report.html",
    )
    report.add_argument("--output", type=Path, help="default: $DP_DATA_DIR/reports/report.html")
    erase = command(
        "erase",
        "remove one person, named by a subject key a source or the project declares, from every "
        "zone (runs the erase_person job; audit in governance.erasure_log)",
        "dp erase --key email=ann@example.org --reason 'ticket 42'  "
        "(the sample utility: --key customer_id=CUS-0A1B2C3D4E)",
    )
    erase.add_argument("--key", action="append", required=True, metavar="COLUMN=VALUE",
                       help="a subject key of the person (repeat for more, all about the same "
                       "person); a PII column's value in clear, as the source normalizes it")  # fmt: skip
    erase.add_argument("--requested-by", default=getpass.getuser(),
                       help="who asks, kept in the audit log (default: your user name)")  # fmt: skip
    erase.add_argument("--reason", default="", help="why, e.g. the request's ticket")
    erase.add_argument("--wait-for-writers", type=float, default=1800, metavar="SECONDS",
                       help="on a DuckLake: how long to wait for the runs at work before the "
                       "history holding the person is expired (default 1800)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "sample-data":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    settings = Settings.from_env()

    if args.command == "sample-data":
        hooks = settings.catalog().sample_data
        if not hooks:
            parser.error("no project served defines sample data (project.yaml: sample_data)")
        for _project, write in hooks:
            print(write(settings.data_dir, rest))
    elif args.command == "init":
        from dp_assets.scaffold import init_project

        print(init_project(args.folder, args.name))
    elif args.command == "add-source":
        from dp_assets.scaffold import add_source

        print(add_source(args.folder, args.source, args.sample))
    elif args.command == "project":
        from dp_assets.scaffold import describe

        print(describe(settings.catalog()))
    elif args.command == "summary":
        from dp_assets.summary import summarize

        print(summarize(settings))
    elif args.command == "checks":
        from dp_assets.summary import failing_checks, format_checks

        failing = failing_checks(settings)
        print("\n".join(format_checks(failing)))
        return int(any(c.severity == "ERROR" for c in failing))
    elif args.command == "quarantine":
        if args.action == "ack":
            return acknowledge(settings, args.source, args.file, args.reason, args.by)
        from dp_assets.summary import quarantine_lines

        print("\n".join(quarantine_lines(settings)))
    elif args.command == "report":
        from dp_assets.operations.report import write_report

        print(f"wrote {write_report(settings, args.output)}")
    elif args.command == "erase":
        return run_erasure(
            settings, args.key, args.requested_by, args.reason, args.wait_for_writers
        )
    return 0


def acknowledge(settings: Settings, source: str, file: str, reason: str, by: str) -> int:
    """``dp quarantine ack``: record the acknowledgement, then report the source's check anew to
    the Dagster instance, so the UI shows it resolved without waiting for the next run."""
    from dp_assets.landing.quarantine import acknowledge as record, open_quarantine
    from dp_assets.resources.warehouse import Warehouse
    from dp_assets.summary import not_built_yet

    warehouse = Warehouse.from_settings(settings)
    if missing := not_built_yet(warehouse):
        print(missing, file=sys.stderr)
        return 1
    with warehouse.transaction() as conn:
        rows = record(conn, source, file, reason, by)
        still_open = open_quarantine(conn, source)
    if rows.is_empty():
        print(f"nothing of {source} named {file!r} is open in quarantine: `dp quarantine` lists "
              "what is", file=sys.stderr)  # fmt: skip
        return 1
    print(f"acknowledged {rows.height} file(s) of {source} ({', '.join(rows['original_name'])}) "
          f"as {by}: {reason}; {still_open.height} still open for {source}")  # fmt: skip
    if source in settings.catalog().sources:
        from dagster import AssetCheckEvaluation, AssetKey

        from dp_assets.formatted.assets import quarantine_check

        check = quarantine_check(
            AssetKey(["formatted", source]), source, still_open, None, settings.quarantine / source
        )
        from dp_assets.summary import dagster_instance

        with dagster_instance(settings) as dagster:
            dagster.report_runless_asset_event(
                AssetCheckEvaluation(
                    asset_key=check.asset_key,
                    check_name=check.check_name,
                    passed=check.passed,
                    metadata=check.metadata,
                    severity=check.severity,
                    description=check.description,
                )
            )
    return 0


def run_erasure(
    settings: Settings, keys: list[str], requested_by: str, reason: str, wait_s: float
) -> int:
    """Run the erase_person job in this process, recorded in the Dagster instance like any run."""
    from dp_assets.definitions import build_defs
    from dp_assets.governance.erasure_job import ERASE_JOB
    from dp_assets.summary import dagster_instance

    config = {
        "keys": keys, "requested_by": requested_by, "reason": reason, "wait_for_writers_s": wait_s,
    }  # fmt: skip
    with dagster_instance(settings) as dagster:
        result = (
            build_defs(settings)
            .get_job_def(ERASE_JOB)
            .execute_in_process(
                run_config={"ops": {"erase": {"config": config}}},
                instance=dagster,
                raise_on_error=False,
            )
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        error = failure.step_failure_data.error if failure else None
        print(f"erasure failed: {error.message.strip() if error else 'see the run ' + result.run_id}",
              file=sys.stderr)  # fmt: skip
        return 1
    (log,) = result.asset_materializations_for_node("erase")[-1:]
    print(f"{log.description}; run {result.run_id}")
    for name, value in log.metadata.items():
        if name != "entries":
            print(f"  {name}: {getattr(value, 'value', value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
