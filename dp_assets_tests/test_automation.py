"""What keeps the platform current: automation policy, one automation tick after new files land,
the daily training schedule, and the hook that retrains when monitoring degrades."""

from __future__ import annotations

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    MaterializeResult,
    RunRequest,
    SkipReason,
    asset,
    build_sensor_context,
    evaluate_automation_conditions,
    materialize,
)

from dp_assets.analysis.pipelines import PIPELINES
from dp_assets.automation import TRAINING_STEPS, build_retrain_sensor, following_new_data
from dp_assets.sample_data import SampleParams, generate


def keys(platform, predicate) -> set[str]:
    graph = platform.defs.resolve_asset_graph()
    return {k.to_user_string() for k in graph.get_all_asset_keys() if predicate(graph.get(k))}


def test_policy_automates_all_but_landing_and_training(platform):
    eager = keys(platform, lambda node: node.automation_condition is not None)
    steps = ("sandbox", "features", "predictions", "drift", "live_accuracy")
    follow = {f"{p}/{s}" for p in PIPELINES for s in steps}
    zones = keys(platform, lambda node: node.group_name in ("formatted", "exploitation"))
    operations = {"reporting/kpis", "reporting/model_accuracy", "monitoring/pipeline_health"}
    assert eager == zones | follow | operations
    # The selection the policy and the benchmark's day share: what follows a landing by itself.
    graph = platform.defs.resolve_asset_graph()
    followers = following_new_data(list(PIPELINES.values())).resolve(graph)
    assert {k.to_user_string() for k in followers} == eager - {"monitoring/pipeline_health"}
    health = graph.get(AssetKey(["monitoring", "pipeline_health"]))
    assert "0 * * * *" in str(
        health.automation_condition.get_label() or health.automation_condition
    )
    fresh = keys(platform, lambda node: node.freshness_policy is not None)
    assert fresh == {
        "exploitation/customers",
        "exploitation/meter_readings",
        "exploitation/daily_consumption",
    } | {f"{p}/predictions" for p in PIPELINES}
    schedule = platform.defs.resolve_schedule_def("train_daily")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.job_name == "train_models"
    train = platform.defs.resolve_job_def("train_models")
    assert {k.to_user_string() for k in train.asset_layer.executable_asset_keys} == {
        f"{p}/{s}" for p in PIPELINES for s in TRAINING_STEPS
    }


def test_landed_files_make_the_next_automation_tick_request_everything_downstream(platform):
    generate(platform.settings.data_dir, SampleParams(days=3, meters=4, seed=2))
    first = evaluate_automation_conditions(defs=platform.defs, instance=platform.instance)
    assert first.total_requested == 0, "nothing to do before anything has landed"

    assert platform.materialize(AssetSelection.groups("landing")).success
    tick = evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, cursor=first.cursor
    )
    requested = {
        k
        for k in keys(platform, lambda node: True)
        if tick.get_num_requested(AssetKey.from_user_string(k))
    }
    zones = keys(platform, lambda node: node.group_name in ("formatted", "exploitation"))
    features = {f"{p}/{s}" for p in PIPELINES for s in ("sandbox", "features")}
    assert zones | features <= requested
    assert not any(k.startswith("landing/") or k.split("/")[1] in TRAINING_STEPS for k in requested)


@asset(
    key=["energy_forecast", "live_accuracy"],
    check_specs=[AssetCheckSpec("accuracy_holds", asset=["energy_forecast", "live_accuracy"])],
)
def live_accuracy(context):
    """A stand-in for the monitoring asset: its check passes or fails as the run's tag says."""
    yield MaterializeResult()
    yield AssetCheckResult(passed=context.run.tags["accuracy"] == "ok")


def test_a_failed_monitoring_check_starts_retraining_once():
    sensor = build_retrain_sensor(list(PIPELINES.values()), "train_models")
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance)
        assert isinstance(sensor(context), SkipReason)

        materialize([live_accuracy], instance=instance, tags={"accuracy": "degraded"})
        (request,) = sensor(context)
        assert isinstance(request, RunRequest)
        assert request.asset_selection == [AssetKey(["energy_forecast", s]) for s in TRAINING_STEPS]
        assert request.tags["dp/retrain_reason"] == "energy_forecast/live_accuracy:accuracy_holds"
        assert isinstance(sensor(context), SkipReason), "the same failure retrains once"
        materialize([live_accuracy], instance=instance, tags={"accuracy": "degraded"})
        assert isinstance(sensor(context), SkipReason), "failing again within the cooldown"

        materialize([live_accuracy], instance=instance, tags={"accuracy": "ok"})
        assert isinstance(sensor(context), SkipReason), "a passing check retrains nothing"
