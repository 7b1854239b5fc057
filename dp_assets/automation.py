"""Unattended operation: what keeps the platform current without anybody clicking.

- The inbox sensor starts a ``land`` run when files arrive (``landing/sensor.py``).
- Formatted, exploitation, reporting, each pipeline's sandbox, features, predictions, drift and
  live accuracy follow through declarative automation (``follow_updates``, Dagster's eager
  condition made to wait for blocking checks and to keep every update): a run for whatever is
  downstream of an update, no hand-written job chains.
- Training (model -> evaluation -> champion) runs daily on a schedule, and when a monitoring signal
  of a pipeline fails or an erasure removed someone it learned from (``retrain_on_degradation``).
- ``monitoring/pipeline_health`` refreshes hourly from the event log (its own cron condition).
- ``fail_dead_runs`` fails runs whose process was killed, so the run queue moves on.
- Freshness policies flag exploitation tables and predictions not updated for a day (the UI shows
  their state; Dagster evaluates them without a sensor).
"""

import datetime as dt
import json
import os

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DagsterEventType,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    FreshnessPolicy,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    map_asset_specs,
    sensor,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from dp_assets.analysis.spec import PipelineSpec
from dp_assets.governance.erasure_job import ERASURE_KEY, RETRAIN_METADATA

TRAINING_STEPS = ("model", "evaluation", "champion")
FOLLOWING_GROUPS = ("formatted", "exploitation", "reporting")
FOLLOWING_PIPELINE_STEPS = ("sandbox", "features", "predictions", "drift", "live_accuracy")
FRESHNESS = dt.timedelta(hours=26)  # daily data, with two hours of slack for a late delivery
FRESHNESS_WARN = dt.timedelta(hours=24)
TRAIN_CRON = "0 3 * * *"  # daily, after the night's deliveries
ERASURES = "erasures"  # the retrain sensor's cursor entry for erasure events
RETRAIN_COOLDOWN = dt.timedelta(hours=12)


def following_new_data(pipelines: list[PipelineSpec]) -> AssetSelection:
    """What follows a landing by itself, through eager automation: the formatted, exploitation and
    reporting groups and each pipeline's steps but training (everything else is started by a
    sensor, a schedule or a person)."""
    steps = [AssetKey([p.name, s]) for p in pipelines for s in FOLLOWING_PIPELINE_STEPS]
    return AssetSelection.groups(*FOLLOWING_GROUPS) | AssetSelection.assets(*steps)


def follow_updates(pipelines: list[PipelineSpec]) -> AutomationCondition:
    """``AutomationCondition.eager()`` with two changes:

    - An update of a dependency is kept until a later tick handles it. Eager forgets it when the
      target was also requested or updated since the previous tick, whatever came first: a landing
      that commits after a run formatted its source, before the next tick, then waited for the
      next file (``since`` breaks such a tie by timestamps, but ``|`` and ``&`` drop them). Here
      a tick that saw a dependency update does not count as handled: at worst one run that finds
      nothing new.
    - Nothing builds on a dependency whose blocking check failed, until it passes again (Dagster
      stops downstream only within the run that failed; dagster#17332). The promotion gate is left
      out: it fails with WARN when the champion stays, and predictions go on with that champion.
    """
    updated = AutomationCondition.any_deps_updated()
    handled = (
        AutomationCondition.initial_evaluation()
        | (AutomationCondition.newly_requested() | AutomationCondition.newly_updated()) & ~updated
    ).with_label("handled, with no dependency updated meanwhile")
    gates = AssetSelection.assets(*(AssetKey([p.name, "champion"]) for p in pipelines))
    return (
        AutomationCondition.in_latest_time_window()
        & (AutomationCondition.newly_missing() | updated).since(handled)
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
        & AutomationCondition.all_deps_blocking_checks_passed().ignore(gates)
    ).with_label("follow_updates")


def with_automation_policy(assets: list, pipelines: list[PipelineSpec]) -> list:
    """The same assets with the platform's automation policy applied in one place:

    - ``follow_updates`` on what follows new data by itself (``following_new_data``);
    - a freshness policy on the predictions (a project's views set their own:
      ``daily_freshness``).
    """
    follow = set(following_new_data(pipelines).resolve(assets))
    condition = follow_updates(pipelines)
    fresh = {AssetKey([p.name, "predictions"]) for p in pipelines}

    def policy(spec):
        if spec.key in follow:
            spec = spec.replace_attributes(automation_condition=condition)
        if spec.key in fresh:
            spec = spec.replace_attributes(freshness_policy=daily_freshness())
        return spec

    return list(map_asset_specs(policy, assets))


def daily_freshness() -> FreshnessPolicy:
    """Daily data, late after a day and two hours: for the predictions and the views (a
    project's) that daily work relies on."""
    return FreshnessPolicy.time_window(fail_window=FRESHNESS, warn_window=FRESHNESS_WARN)


automation_sensor = AutomationConditionSensorDefinition(
    "automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,  # the implicit default sensor starts stopped
    minimum_interval_seconds=15,
    description="Evaluates the automation conditions: formatted, exploitation, features, predictions",
)


def training(pipelines: list[PipelineSpec]):
    """The training job, its daily schedule and the retraining hook."""
    keys = [AssetKey([p.name, step]) for p in pipelines for step in TRAINING_STEPS]
    job = define_asset_job(
        "train_models",
        selection=AssetSelection.assets(*keys),
        description="Train, evaluate and gate every pipeline's model",
    )
    schedule = ScheduleDefinition(
        name="train_daily",
        job=job,
        cron_schedule=TRAIN_CRON,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
    )
    return job, schedule, build_retrain_sensor(pipelines, job.name)


def build_retrain_sensor(
    pipelines: list[PipelineSpec], job_name: str, cooldown: dt.timedelta = RETRAIN_COOLDOWN
):
    """Retrain a pipeline when one of its monitoring checks (``spec.retrain_on``) newly fails, at
    most once per ``cooldown``, or when an erasure removed a person it was trained on (always).

    The cooldown breaks a loop: retraining re-runs predictions and the monitoring after them, whose
    checks fail again on the same past predictions until new actuals arrive.
    """

    @sensor(
        name="retrain_on_degradation",
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Starts training for a pipeline whose drift or live-accuracy check failed, or "
        "whose training data lost a person to an erasure",
    )
    def retrain_on_degradation(context: SensorEvaluationContext):
        seen = json.loads(context.cursor or "{}")
        erasures = context.instance.fetch_materializations(
            AssetRecordsFilter(ERASURE_KEY, after_storage_id=seen.get(ERASURES, 0)),
            limit=1000,
            ascending=True,
        ).records
        # pipeline -> (run-key part, reason): erasures that touched its data, then failed checks
        erased: dict[str, list[tuple[str, str]]] = {}
        for record in erasures:
            metadata = record.asset_materialization.metadata
            for name in metadata[RETRAIN_METADATA].value:
                erased.setdefault(name, []).append(
                    (f"e{record.storage_id}", f"erasure {metadata['erasure_id'].value}")
                )
            seen[ERASURES] = record.storage_id
        requests, now = [], dt.datetime.now(dt.UTC).timestamp()
        for spec in pipelines:
            failed = []  # one training per pipeline, however many signals
            for asset_name, check_name in spec.retrain_on:
                check = AssetCheckKey(AssetKey([spec.name, asset_name]), check_name)
                record = context.instance.get_latest_asset_check_evaluation_record(check)
                if record is None or record.id <= seen.get(check.to_user_string(), 0):
                    continue
                seen[check.to_user_string()] = record.id
                if record.status == AssetCheckExecutionRecordStatus.FAILED:
                    failed.append((f"c{record.id}", check.to_user_string()))
            last = f"retrained/{spec.name}"
            if failed and now - seen.get(last, 0) < cooldown.total_seconds():
                context.log.info(f"{spec.name}: {failed} failed within the retraining cooldown")
                failed = []
            if failed:
                seen[last] = now
            failed += erased.get(spec.name, [])
            if failed:
                requests.append(
                    RunRequest(
                        run_key=f"retrain-{spec.name}-{'-'.join(sorted(p for p, _ in failed))}",
                        asset_selection=[AssetKey([spec.name, s]) for s in TRAINING_STEPS],
                        tags={"dp/retrain_reason": ", ".join(name for _, name in sorted(failed))},
                    )
                )
        context.update_cursor(json.dumps(seen))
        return requests or SkipReason("no monitoring check newly failed, no erasure")

    return retrain_on_degradation


@sensor(
    name="fail_dead_runs",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks as failed a started run whose process is gone (killed, machine rebooted), "
    "so the run queue and the warehouse pool move on. Local deployments only",
)
def fail_dead_runs(context: SensorEvaluationContext):
    from dagster._core.launcher import DefaultRunLauncher

    instance = context.instance
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return SkipReason("only for the local run launcher: other launchers monitor their workers")
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        pid = worker_pid(instance, run.run_id)
        if pid is not None and not process_alive(pid):
            instance.report_run_failed(
                run, message=f"the run's process (pid {pid}) is gone: killed or lost"
            )
            failed.append(run.run_id)
    return SkipReason(f"failed dead runs: {failed}" if failed else "no dead runs")


def worker_pid(instance, run_id: str) -> int | None:
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.RUN_START, limit=1
    ).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
