"""Dagster wiring of operations: ``[monitoring, pipeline_health]`` from the event log (hourly, with
no lineage edge from the assets it watches) and ``[reporting, model_accuracy]`` (following the
pipelines' live accuracy). A project's own reporting tables (the sample utility's
``reporting/kpis``) are its views."""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    DagsterEventType,
    MetadataValue,
    asset,
)

from dp_assets.analysis.schema import LiveAccuracyRow
from dp_assets.metadata import (
    LAST_IN_RUN,
    OWNER,
    WAREHOUSE_POOL,
    markdown,
    schema_check_spec,
    spec_metadata,
    stored_table_results,
)
from dp_assets.operations.health import HEALTH_TABLE, HISTORY, PipelineHealthRow, health_rows
from dp_assets.frames import empty_frame
from dp_assets.operations.accuracy import ACCURACY_TABLE, ModelAccuracy, model_accuracy
from dp_assets.resources import Warehouse
from dp_assets.resources.tables import ensure_table, replace_table, replace_table_with

HEALTH_KEY = AssetKey(["monitoring", "pipeline_health"])
ACCURACY_KEY = AssetKey(["reporting", "model_accuracy"])
HEALTH_CRON = "0 * * * *"


def build_operations_assets(watched: list[AssetKey], pipelines: list[str]) -> list:
    @asset(
        key=HEALTH_KEY,
        description=f"Per asset over time ({HEALTH_TABLE}): step duration, rows in and out, reject "
        f"rate and quarantined files of its last {HISTORY} materializations, read from Dagster's "
        "event log. Refreshed hourly, and last in a run that includes it",
        group_name="monitoring",
        owners=[OWNER],
        kinds={"dagster", "duckdb"},
        code_version="1",
        metadata=spec_metadata(PipelineHealthRow, HEALTH_TABLE),
        check_specs=[schema_check_spec(HEALTH_KEY)],
        # It reads the event log of every asset, not their tables: no lineage edge from each (the
        # graph drew one from nearly every asset). Hourly by itself, and last in a run that
        # includes it, so that it sees what the run's other steps did.
        op_tags=LAST_IN_RUN,
        automation_condition=AutomationCondition.cron_tick_passed(HEALTH_CRON)
        & ~AutomationCondition.in_progress(),
        pool=WAREHOUSE_POOL,
    )
    def pipeline_health(context: AssetExecutionContext, warehouse: Warehouse):
        instance, events = context.instance, []
        for key in watched:
            for record in instance.fetch_materializations(key, limit=HISTORY).records:
                entry = record.event_log_entry
                metadata = record.asset_materialization.metadata
                events.append({
                    "asset": key.to_user_string(), "run_id": entry.run_id, "step_key": entry.step_key,
                    "timestamp": entry.timestamp,
                    "metadata": {k: getattr(v, "value", v) for k, v in metadata.items()},
                })  # fmt: skip
        step_ms = {}
        for run_id in {e["run_id"] for e in events}:
            for record in instance.get_records_for_run(
                run_id, of_type=DagsterEventType.STEP_SUCCESS, limit=10_000
            ).records:
                event = record.event_log_entry.dagster_event
                step_ms[(run_id, event.step_key)] = event.event_specific_data.duration_ms
        frame = health_rows(events, step_ms)
        with warehouse.transaction() as conn:
            replace_table_with(conn, HEALTH_TABLE, frame)
            yield from stored_table_results(
                conn, HEALTH_TABLE, PipelineHealthRow, HEALTH_KEY,
                runs=MetadataValue.int(frame["run_id"].n_unique()),
                slowest=markdown(frame.group_by("asset").agg(pl.col("step_seconds").max()).sort(
                    "step_seconds", descending=True, nulls_last=True), rows=10),
            )  # fmt: skip

    live = [AssetKey([p, "live_accuracy"]) for p in pipelines]

    @asset(
        key=ACCURACY_KEY,
        description=f"Live accuracy of each pipeline's models per month ({ACCURACY_TABLE}): "
        "the forecast error and classification quality a dashboard shows",
        deps=live,
        metadata=spec_metadata(ModelAccuracy, ACCURACY_TABLE),
        group_name="reporting",
        owners=[OWNER],
        kinds={"duckdb", "sql"},
        code_version="1",
        check_specs=[schema_check_spec(ACCURACY_KEY)],
        pool=WAREHOUSE_POOL,
    )
    def model_accuracy_table(warehouse: Warehouse):
        with warehouse.transaction() as conn:
            for pipeline in pipelines:  # a pipeline not run yet reports nothing, not an error
                ensure_table(conn, f"{pipeline}.live_accuracy", LiveAccuracyRow)
            if pipelines:
                replace_table(conn, ACCURACY_TABLE, model_accuracy(pipelines))
            else:  # no pipeline served: an empty table, not a query with nothing to unite
                replace_table_with(conn, ACCURACY_TABLE, empty_frame(ModelAccuracy))
            yield from stored_table_results(conn, ACCURACY_TABLE, ModelAccuracy, ACCURACY_KEY)

    return [pipeline_health, model_accuracy_table]
