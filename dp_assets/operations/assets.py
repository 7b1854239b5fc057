"""Dagster wiring of operations: ``[monitoring, pipeline_health]`` from the event log (hourly) and
the ``reporting`` tables (following their inputs)."""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    DagsterEventType,
    MetadataValue,
    asset,
    multi_asset,
)

from dp_assets.analysis.schema import LiveAccuracyRow
from dp_assets.metadata import (
    OWNER,
    WAREHOUSE_POOL,
    markdown,
    schema_check_spec,
    spec_metadata,
    stored_table_results,
)
from dp_assets.operations.health import HEALTH_TABLE, HISTORY, PipelineHealthRow, health_rows
from dp_assets.operations.kpis import (
    ACCURACY_TABLE,
    KPIS,
    KPIS_TABLE,
    Kpi,
    ModelAccuracy,
    model_accuracy,
)
from dp_assets.resources import Warehouse
from dp_assets.resources.tables import ensure_table, replace_table, replace_table_with

HEALTH_KEY = AssetKey(["monitoring", "pipeline_health"])
KPIS_KEY, ACCURACY_KEY = AssetKey(["reporting", "kpis"]), AssetKey(["reporting", "model_accuracy"])
HEALTH_CRON = "0 * * * *"


def build_operations_assets(watched: list[AssetKey], pipelines: list[str]) -> list:
    @asset(
        key=HEALTH_KEY,
        description=f"Per asset over time ({HEALTH_TABLE}): step duration, rows in and out, reject "
        f"rate and quarantined files of its last {HISTORY} materializations, read from Dagster's "
        "event log. Refreshed hourly",
        group_name="monitoring",
        owners=[OWNER],
        kinds={"dagster", "duckdb"},
        code_version="1",
        metadata=spec_metadata(PipelineHealthRow, HEALTH_TABLE),
        check_specs=[schema_check_spec(HEALTH_KEY)],
        # It reads what these assets did: downstream of them in lineage and within a run. Hourly
        # whatever they did (on_cron would also wait for every one of them to update).
        deps=watched,
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

    @multi_asset(
        name="reporting",
        specs=[
            AssetSpec(
                KPIS_KEY,
                description=f"Business KPIs per month and region ({KPIS_TABLE}): active, new and "
                "churned customers, churn rate, consumption and its cost",
                deps=[["exploitation", "customers"], ["exploitation", "daily_consumption"]],
                metadata=spec_metadata(Kpi, KPIS_TABLE),
                group_name="reporting",
                owners=[OWNER],
                kinds={"duckdb", "sql"},
                code_version="1",
            ),
            AssetSpec(
                ACCURACY_KEY,
                description=f"Live accuracy of each pipeline's models per month ({ACCURACY_TABLE}): "
                "the forecast error and churn model quality a dashboard shows",
                deps=live,
                metadata=spec_metadata(ModelAccuracy, ACCURACY_TABLE),
                group_name="reporting",
                owners=[OWNER],
                kinds={"duckdb", "sql"},
                code_version="1",
            ),
        ],  # fmt: skip
        check_specs=[schema_check_spec(KPIS_KEY), schema_check_spec(ACCURACY_KEY)],
        pool=WAREHOUSE_POOL,
    )
    def reporting(warehouse: Warehouse):
        with warehouse.transaction() as conn:
            for pipeline in pipelines:  # a pipeline not run yet reports nothing, not an error
                ensure_table(conn, f"{pipeline}.live_accuracy", LiveAccuracyRow)
            replace_table(conn, KPIS_TABLE, KPIS)
            replace_table(conn, ACCURACY_TABLE, model_accuracy(pipelines))
            outputs = [
                stored_table_results(conn, KPIS_TABLE, Kpi, KPIS_KEY),
                stored_table_results(conn, ACCURACY_TABLE, ModelAccuracy, ACCURACY_KEY),
            ]
        for materialization, _ in outputs:
            yield materialization
        for _, check in outputs:
            yield check

    return [pipeline_health, reporting]
