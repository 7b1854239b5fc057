"""Assembles ``defs``: every zone's assets for the projects served (``dp_assets.project``), one
asset chain per analytical pipeline, the jobs, schedule and sensors that keep them current
(``automation.py``), resources, policy.

``build_defs(settings)`` lets tests and the CLI point the platform at another data dir or project
without editing code; ``defs`` is the default, configured from the environment (``DP_DATA_DIR``,
``DP_PROJECT``).
"""

from __future__ import annotations

import difflib

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from dp_assets.analysis.factory import build_pipeline_assets
from dp_assets.formatted.assets import build_formatted_asset
from dp_assets.frozen import freeze
from dp_assets.governance.assets import build_data_dictionary_asset
from dp_assets.governance.erasure_job import build_erasure_job, erasure_log
from dp_assets.landing.assets import build_landing_asset
from dp_assets.automation import (
    automation_sensor,
    fail_dead_runs,
    training,
    with_automation_policy,
)
from dp_assets.landing.sensor import LAND_JOB, build_inbox_sensor
from dp_assets.metadata import stored_tables
from dp_assets.operations.assets import build_operations_assets
from dp_assets.operations.report_asset import build_report_asset
from dp_assets.resources import DataDir, MlflowTracking, Warehouse
from dp_assets.project import ProjectError
from dp_assets.settings import Settings

land_job = define_asset_job(
    LAND_JOB,
    selection=AssetSelection.groups("landing"),
    description="Take new inbox files into the persistent landing; the rest follows by automation",
)


def check_inputs(assets: list) -> None:
    """Every table a view or pipeline reads is one an asset writes: a misspelt name in a view's or
    sandbox's SQL is an error now, not a step that waits for ever for a table nobody builds."""
    specs = [spec for a in assets for spec in a.specs]
    known = {spec.key for spec in specs}
    for spec in specs:
        if missing := sorted(
            d.asset_key.to_user_string() for d in spec.deps if d.asset_key not in known
        ):
            names = sorted(k.to_user_string() for k in known)
            hints = {m: difflib.get_close_matches(m, names, 1) for m in missing}
            raise ProjectError(
                f"{spec.key.to_user_string()} reads {', '.join(missing)}, which no source or view "
                "defines" + "".join(f" (did you mean {h[0]}?)" for h in hints.values() if h)
            )


def build_defs(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings.from_env()
    catalog = settings.catalog()
    pipelines = list(catalog.pipelines.values())
    assets = [
        build_landing_asset(catalog.sources),
        *(build_formatted_asset(source) for source in catalog.sources.values()),
        *catalog.assets,
        *(a for spec in pipelines for a in build_pipeline_assets(spec)),
    ]
    assets += build_operations_assets(
        [k for a in assets for k in a.keys], [p.name for p in pipelines]
    )
    assets.append(build_report_asset([k for a in assets for k in a.keys], pipelines))
    assets.append(erasure_log)
    check_inputs(assets)
    assets.append(build_data_dictionary_asset(assets))
    train_job, train_schedule, retrain_sensor = training(pipelines)
    specs = [spec for a in assets for spec in a.specs]
    tables = {table: spec.key for table, spec in stored_tables(specs).items()}
    erase_job = build_erasure_job(tables, [p.name for p in pipelines])
    return Definitions(
        # Cross-cutting policy in one place: what automation keeps current.
        assets=with_automation_policy(assets, pipelines),
        asset_checks=catalog.checks,
        jobs=[land_job, train_job, erase_job],
        schedules=[train_schedule],
        sensors=[
            build_inbox_sensor(settings),
            automation_sensor,
            retrain_sensor,
            fail_dead_runs,
        ],
        resources={
            "data_dir": DataDir(
                path=str(settings.data_dir), projects=[str(p) for p in settings.projects]
            ),
            "warehouse": Warehouse.from_settings(settings),
            "mlflow_tracking": MlflowTracking.from_settings(settings),
        },
        # Every step that does real work holds the single DuckDB writer slot, so steps cannot run
        # in parallel anyway; one process avoids ~5 s of start-up per step (FIELD_NOTES).
        executor=in_process_executor,
    )


defs = build_defs()
freeze()  # what a process loading the definitions imported lives as long as it does
