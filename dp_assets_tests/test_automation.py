"""What keeps the platform current: automation policy, automation ticks played one by one around
landings, runs and failed blocking checks, the daily training schedule, and the hook that retrains
when monitoring degrades."""

from __future__ import annotations

import shutil

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    MaterializeResult,
    RunRequest,
    SkipReason,
    asset,
    build_sensor_context,
    evaluate_automation_conditions,
    materialize,
)

from dp_assets.automation import TRAINING_STEPS, build_retrain_sensor, following_new_data
from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_assets_tests.conftest import PIPELINES


def keys(platform, predicate) -> set[str]:
    graph = platform.defs.resolve_asset_graph()
    return {k.to_user_string() for k in graph.get_all_asset_keys() if predicate(graph.get(k))}


class Ticks:
    """The automation sensor's ticks played one at a time on the platform's instance."""

    def __init__(self, platform):
        self.platform, self.cursor = platform, None

    def __call__(self) -> set[str]:
        """One tick: the keys it requests."""
        result = evaluate_automation_conditions(
            defs=self.platform.defs, instance=self.platform.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        return keys(self.platform, lambda node: result.get_num_requested(node.key))


def hold_back_latest(platform, manifest, source: str, held) -> str:
    """Move the latest delivery of ``source`` out of the inbox; returns its name."""
    latest = max((f for f in manifest.files if f["source"] == source), key=lambda f: f["arrival"])
    held.mkdir(exist_ok=True)
    shutil.move(platform.settings.inbox / source / latest["name"], held / latest["name"])
    return latest["name"]


def test_policy_automates_all_but_landing_and_training(platform):
    eager = keys(platform, lambda node: node.automation_condition is not None)
    steps = ("sandbox", "features", "predictions", "drift", "live_accuracy")
    follow = {f"{p}/{s}" for p in PIPELINES for s in steps}
    zones = keys(platform, lambda node: node.group_name in ("formatted", "exploitation"))
    on_their_own = {"monitoring/pipeline_health", "governance/data_dictionary"}  # no deps to follow
    operations = {"reporting/kpis", "reporting/model_accuracy", "reporting/report", *on_their_own}
    assert eager == zones | follow | operations
    # The selection the policy and the benchmark's day share: what follows a landing by itself.
    graph = platform.defs.resolve_asset_graph()
    followers = following_new_data(list(PIPELINES.values())).resolve(graph)
    assert {k.to_user_string() for k in followers} == eager - on_their_own
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


VENDOR_A = "formatted/meters_vendor_a"


def test_a_landing_committed_after_a_run_formatted_its_source_is_followed_within_two_ticks(
    platform, tmp_path
):
    """The trial's gap: an automation run formats, then a `land` run queued behind it in the
    warehouse pool lands a file, both between two ticks. Eager automation counted the file as
    handled by that run and formatted it only when the next file came."""
    manifest = generate(platform.settings.data_dir, SampleParams(days=3, meters=4, seed=2))
    late = hold_back_latest(platform, manifest, "meters_vendor_a", tmp_path / "held")
    tick = Ticks(platform)
    assert tick() == set()
    assert platform.materialize(AssetSelection.groups("landing")).success
    assert VENDOR_A in tick()
    assert tick() == set(), "the requested run is queued: nothing more to ask"

    # Between two ticks: the requested run formats and integrates, then the late file lands.
    assert platform.materialize(AssetSelection.groups("formatted", "exploitation")).success
    shutil.move(tmp_path / "held" / late, platform.settings.inbox / "meters_vendor_a" / late)
    assert platform.materialize(AssetSelection.groups("landing")).success
    assert VENDOR_A in tick() | tick(), "the late file's landing was never followed"
    assert tick() == set(), "followed once, not on every tick"


def test_a_landing_while_its_formatting_is_pending_in_a_run_is_followed_once_that_run_ends(
    platform, tmp_path
):
    """A landing that commits while the formatted asset is planned in an unfinished run is
    remembered while that run blocks it, and followed when the run ends without formatting it."""
    manifest = generate(platform.settings.data_dir, SampleParams(days=3, meters=4, seed=2))
    late = hold_back_latest(platform, manifest, "meters_vendor_a", tmp_path / "held")
    tick = Ticks(platform)
    tick()
    assert platform.materialize(AssetSelection.groups("landing", "formatted")).success
    tick()
    job = platform.defs.resolve_implicit_global_asset_job_def()
    pending = platform.instance.create_run_for_job(
        job,
        asset_selection={AssetKey.from_user_string(k) for k in (VENDOR_A, f"{VENDOR_A}_rejects")},
        status=DagsterRunStatus.STARTING,
    )
    shutil.move(tmp_path / "held" / late, platform.settings.inbox / "meters_vendor_a" / late)
    assert platform.materialize(AssetSelection.groups("landing")).success
    assert VENDOR_A not in tick(), "in progress in the other run"
    platform.instance.report_run_canceled(pending)
    assert VENDOR_A in tick() | tick()


def report_check(platform, key: str, check: str, passed: bool, severity: str = "ERROR"):
    """Record a check's outcome on the asset's latest materialization, as its step would."""
    platform.instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=AssetKey.from_user_string(key),
            check_name=check,
            passed=passed,
            severity=AssetCheckSeverity[severity],
        )
    )


def test_automation_builds_nothing_on_a_failed_blocking_check_until_it_passes(platform):
    """Dagster stops downstream of a failed blocking check only within the run; automation itself
    does not wait for blocking checks by default (dagster#17332). The check's own evaluation is
    tested with the formatted zone; here its outcome is recorded as the check's step records it."""
    generate(platform.settings.data_dir, SampleParams(days=3, meters=4, seed=2))
    tick = Ticks(platform)
    tick()
    # Formatted by a run that integrates nothing: its update is for automation to follow.
    assert platform.materialize(AssetSelection.groups("landing", "formatted")).success
    report_check(platform, VENDOR_A, "file_outcomes", passed=False)
    graph = platform.defs.resolve_asset_graph()
    after = AssetSelection.assets(AssetKey.from_user_string(VENDOR_A)).downstream(
        include_self=False
    )
    downstream = {k.to_user_string() for k in after.resolve(graph)}
    assert "exploitation/meter_readings" in downstream
    requested = tick()
    assert "exploitation/customers" in requested, "what the failed check does not feed goes on"
    assert not requested & downstream, "built on a failed blocking check"
    assert not tick() & downstream

    report_check(platform, VENDOR_A, "file_outcomes", passed=True)
    assert "exploitation/meter_readings" in tick(), "the update waited, it was not forgotten"


def test_a_champion_kept_by_the_promotion_gate_still_scores(platform):
    """The promotion gate is blocking but fails with WARN when it keeps the champion: within a
    run, Dagster lets predictions go on, and so does automation."""
    generate(platform.settings.data_dir, SampleParams(days=3, meters=4, seed=2))
    tick = Ticks(platform)
    tick()
    assert platform.materialize(AssetSelection.groups("landing", "formatted")).success
    champion = "energy_forecast/champion"
    platform.instance.report_runless_asset_event(
        AssetMaterialization(asset_key=AssetKey.from_user_string(champion))
    )
    report_check(platform, champion, "schema", passed=True)
    report_check(platform, champion, "promotion_gate", passed=False, severity="WARN")
    requested = tick()
    assert "energy_forecast/predictions" in requested
    assert "customer_churn/predictions" not in requested, "no champion at all: nothing to score"


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
