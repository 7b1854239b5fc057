"""The ``dp`` command: ``dp sample-data`` writes raw files into the inbox, ``dp summary`` reports,
``dp report`` writes an HTML report, ``dp erase`` removes one person from every zone."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from dp_assets.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "sample-data",
        # Its options are the serving project's own (the sample utility's: --days, --meters, ...).
        add_help=False,
        help="write sample raw files (with known problems) into $DP_DATA_DIR/inbox, by the "
        "projects that define sample data; `dp sample-data --help` lists their options",
    )
    init = commands.add_parser(
        "init",
        help="create an empty project folder (project.yaml, sources/, views/, pipelines/)",
        description="Create an empty project. Serve it with DP_PROJECT=<folder> (several: "
        "DP_PROJECT=utility:<folder>). Example: dp init ~/projects/grid",
    )
    init.add_argument("folder", type=Path, help="the project folder (created)")
    init.add_argument("--name", help="project name (default: the folder's, made an identifier)")
    add = commands.add_parser(
        "add-source",
        help="scaffold sources/<name>.yaml from a sample file (delimiter, header, types, nulls)",
        description="Sniff a sample file and write a source declaration to edit. Example: "
        "dp add-source ~/projects/grid pjm_load --sample PJME_hourly.csv",
    )
    add.add_argument("folder", type=Path, help="the project folder")
    add.add_argument("source", help="source name (lower-case, digits, _): also its inbox folder")
    add.add_argument("--sample", type=Path, required=True, help="a sample raw file")
    commands.add_parser(
        "project",
        help="list the projects served (DP_PROJECT) and the sources, views and pipelines found",
    )
    commands.add_parser("summary", help="tables with row counts, rejects, quarantined files")
    report = commands.add_parser(
        "report", help="write one HTML page: data quality, drift, model accuracy over time, KPIs"
    )
    report.add_argument("--output", type=Path, help="default: $DP_DATA_DIR/reports/report.html")
    erase = commands.add_parser(
        "erase",
        help="remove one person from every zone (runs the erase_person job; audit in "
        "governance.erasure_log)",
        description="Remove one person, named by a subject key a source or the project declares, "
        "from every zone. Examples: dp erase --key email=ann@example.org; "
        "dp erase --key customer_id=CUS-0A1B2C3D4E (the sample utility)",
    )
    erase.add_argument("--key", action="append", required=True, metavar="COLUMN=VALUE",
                       help="a subject key of the person (repeat for more, all about the same "
                       "person); a PII column's value in clear, as the source normalizes it")  # fmt: skip
    erase.add_argument("--requested-by", default=getpass.getuser(),
                       help="who asks, kept in the audit log (default: your user name)")  # fmt: skip
    erase.add_argument("--reason", default="", help="why, e.g. the request's ticket")
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
    elif args.command == "report":
        from dp_assets.operations.report import write_report

        print(f"wrote {write_report(settings, args.output)}")
    elif args.command == "erase":
        return run_erasure(settings, args.key, args.requested_by, args.reason)
    return 0


def run_erasure(settings: Settings, keys: list[str], requested_by: str, reason: str) -> int:
    """Run the erase_person job in this process, recorded in the Dagster instance like any run."""
    import os

    from dagster import DagsterInstance

    from dp_assets.definitions import build_defs
    from dp_assets.governance.erasure_job import ERASE_JOB

    # The Makefile's default, so the run lands in the same instance the UI and daemon read.
    os.environ.setdefault("DAGSTER_HOME", str(settings.data_dir / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    config = {"keys": keys, "requested_by": requested_by, "reason": reason}
    with DagsterInstance.get() as instance:
        result = (
            build_defs(settings)
            .get_job_def(ERASE_JOB)
            .execute_in_process(
                run_config={"ops": {"erase": {"config": config}}},
                instance=instance,
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
