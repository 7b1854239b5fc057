"""The analytical pipelines on small generated data: both chains materialized through the real defs,
MLflow tracking and registry, reproducibility, the gate, the leakage guard, a third pipeline from
the unchanged factory, and a request to MLflow's own scoring server."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, AssetSelection, MetadataValue, materialize

from dp_assets.analysis.factory import build_pipeline_assets, feature_matrix
from dp_assets.analysis.gate import decide
from dp_assets.analysis.leakage import future_leaks
from dp_assets.governance.erasure_job import RETRAIN_TAG
from dp_assets.analysis.spec import Gate, PipelineSpec
from dp_assets.metadata import PREVIEW_ROWS
from dp_assets_tests.conftest import PIPELINES, score_served
from dp_projects.utility.sample_data.generator import SampleParams, generate

pytestmark = pytest.mark.slow


def tracking(platform):
    return platform.defs.resources["mlflow_tracking"]


def versions(platform, pipeline: str) -> list[int]:
    """The registered versions of a pipeline's model."""
    found = tracking(platform).client().search_model_versions(f"name = '{pipeline}'")
    return sorted(int(v.version) for v in found)


def latest_promotion(platform, pipeline: str) -> dict:
    (row,) = platform.frame(
        f"SELECT * FROM {pipeline}.promotions ORDER BY decided_at DESC LIMIT 1"
    ).iter_rows(named=True)
    return row


def gate_check(result):
    (gate,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "promotion_gate"]
    return gate


def overall(platform, pipeline: str, model: str = "challenger") -> dict[str, float]:
    rows = platform.sql(
        f"SELECT metric, value FROM {pipeline}.evaluation WHERE segment_column = 'all' AND model = ?",
        [model],
    )
    return dict(rows)


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_pipeline_chain_materialized_with_metrics(world, pipeline):
    platform, result = world
    spec = PIPELINES[pipeline]
    events = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    for step in ("sandbox", "features", "model", "evaluation", "champion", "predictions"):
        assert f"{pipeline}/{step}" in events
    metrics = events[f"{pipeline}/evaluation"]
    primary = "challenger mae" if spec.task == "regression" else "challenger roc_auc"
    assert primary in metrics and "improvement_vs_baseline_" + primary.split()[1] in metrics
    # Small enough for the asset page to show inline (markdown under 1,000 characters), the
    # images served by the MLflow UI from the run's artifacts.
    plots = metrics["plots"].value
    assert plots.startswith("![") and len(plots) < 1000, plots
    assert plots.count("/get-artifact?path=evaluation/") == 2
    assert "data:image/png;base64," not in plots
    segments = {
        s for (s,) in platform.sql(f"SELECT DISTINCT segment_column FROM {pipeline}.evaluation")
    }
    assert segments == {"all", "region", "tariff"}
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }
    assert checks[(f"{pipeline}/features", "no_future_leakage")] is True
    assert checks[(f"{pipeline}/champion", "promotion_gate")] is True
    assert all(
        passed
        for (asset, name), passed in checks.items()
        if asset.startswith(pipeline) and name == "schema"
    )


def test_models_beat_their_baselines_on_small_data(world):
    platform, _ = world
    energy, naive = (
        overall(platform, "energy_forecast"),
        overall(platform, "energy_forecast", "baseline"),
    )
    assert energy["mae"] < 0.85 * naive["mae"]
    assert overall(platform, "customer_churn")["roc_auc"] > 0.7


# A year of a small world, as long as bench scale M: the validation window, the year's last days,
# comes after a full year of generated weather.
YEAR = SampleParams(days=365, meters=70, seed=3)


def test_a_year_of_data_trains_a_forecast_that_clears_the_gate(platform):
    generate(platform.settings.data_dir, YEAR)
    champion = AssetSelection.assets(AssetKey(["energy_forecast", "champion"]))
    assert platform.materialize(champion.upstream().required_multi_asset_neighbors()).success
    energy, naive = (
        overall(platform, "energy_forecast"),
        overall(platform, "energy_forecast", "baseline"),
    )
    margin = PIPELINES["energy_forecast"].gate.min_improvement_vs_baseline
    assert energy["mae"] < (1 - margin) * naive["mae"], (energy, naive)
    assert latest_promotion(platform, "energy_forecast")["promoted"]


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_registered_model_names_its_lineage_and_metrics_are_in_mlflow(world, pipeline):
    platform, result = world
    client = tracking(platform).client()
    champion = client.get_model_version_by_alias(pipeline, "champion")
    assert champion.tags["dagster/run_id"] == result.run_id
    assert champion.tags["dagster/code_version"].startswith("1-")
    assert champion.tags["data_version"] and champion.tags["training_key"]
    assert champion.tags["gate"].startswith("promoted")
    run = client.get_run(champion.run_id)
    assert (
        "validation_" + ("mae" if PIPELINES[pipeline].task == "regression" else "roc_auc")
        in run.data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(champion.run_id, "evaluation")}
    assert {
        "evaluation/performance.png",
        "evaluation/feature_importance.png",
        "evaluation/segments.csv",
    } <= artifacts
    # Artifacts live under the data dir, not in the working directory.
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(
        platform.settings.data_dir
    )


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_predictions_record_model_version_and_time(world, pipeline):
    platform, _ = world
    version = int(tracking(platform).model_version(pipeline, "champion").version)
    rows = platform.frame(f"SELECT * FROM {pipeline}.predictions")
    (scored,) = platform.sql(f"SELECT count(*) FROM {pipeline}.features WHERE split = 'score'")[0]
    assert rows.height == scored > 0
    assert rows["model_version"].unique().to_list() == [version]
    assert rows["predicted_at"].null_count() == 0 and rows["as_of"].n_unique() == 1


def model_file(platform, pipeline: str, version: str, into: Path) -> bytes:
    """The booster a registered version holds, as LightGBM saved it."""
    import mlflow.artifacts

    uri = tracking(platform).tracking_uri
    folder = mlflow.artifacts.download_artifacts(
        f"models:/{pipeline}/{version}", dst_path=str(into), tracking_uri=uri, registry_uri=uri
    )
    return (Path(folder) / "model.lgb").read_bytes()


def test_retraining_is_reproducible_and_a_worse_model_is_not_promoted(world, tmp_path):
    platform, _ = world
    chain = AssetSelection.assets(
        *[["energy_forecast", s] for s in ("model", "evaluation", "champion", "predictions")]
    )
    first = overall(platform, "energy_forecast")
    champion = tracking(platform).model_version("energy_forecast", "champion")
    before = versions(platform, "energy_forecast")

    # An erasure's retrain tag rules the registered version out of reuse: the same data, code and
    # seed train again, and give the same model and metrics (a tie, so no promotion).
    client = tracking(platform).client()
    client.set_model_version_tag("energy_forecast", champion.version, RETRAIN_TAG, "test")
    try:
        retrain = platform.materialize(chain)
    finally:
        client.delete_model_version_tag("energy_forecast", champion.version, RETRAIN_TAG)
    assert retrain.success
    assert versions(platform, "energy_forecast") == [*before, before[-1] + 1]
    retrained = tracking(platform).model_version("energy_forecast", "challenger")
    assert int(retrained.version) == before[-1] + 1
    assert retrained.tags["training_key"] == champion.tags["training_key"]
    assert overall(platform, "energy_forecast") == first
    assert model_file(platform, "energy_forecast", retrained.version, tmp_path / "again") == (
        model_file(platform, "energy_forecast", champion.version, tmp_path / "first")
    )
    assert "ties the champion" in gate_check(retrain).description

    # A deliberately weak challenger (one boosting round) is rejected; the champion stays.
    config = {"ops": {"energy_forecast__model": {"config": {"num_boost_round": 1}}}}
    result = platform.materialize(chain, run_config=config)
    assert result.success, "a rejected challenger must not stop predictions"
    gate = [e for e in result.get_asset_check_evaluations() if e.check_name == "promotion_gate"][0]
    assert gate.passed is False and gate.severity.value == "WARN"
    assert gate.description.startswith("not promoted") and "baseline" in gate.description
    assert len(gate.description) <= 200
    assert (
        tracking(platform).model_version("energy_forecast", "champion").version == champion.version
    )
    ((promoted, reason, after),) = platform.sql(
        "SELECT promoted, reason, champion_after FROM energy_forecast.promotions ORDER BY decided_at DESC LIMIT 1"
    )
    assert (
        not promoted
        and "not promoted" in reason
        and "baseline" in reason
        and after == int(champion.version)
    )
    assert platform.sql("SELECT DISTINCT model_version FROM energy_forecast.predictions") == [
        (int(champion.version),)
    ]


CHAIN = ("sandbox", "features", "model", "evaluation", "champion", "predictions")


def test_a_rerun_on_unchanged_data_registers_no_version_and_says_why(world):
    platform, _ = world
    champion = tracking(platform).model_version("energy_forecast", "champion")
    before = versions(platform, "energy_forecast")

    result = platform.materialize(AssetSelection.assets(*[["energy_forecast", s] for s in CHAIN]))
    assert result.success
    assert versions(platform, "energy_forecast") == before
    model = {
        e.asset_key.path[-1]: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }["model"]
    assert model["model_version"].value == int(champion.version)
    assert f"reuses version {champion.version}" in model["training"].value
    assert model["data version"].value == champion.tags["data_version"]

    promotion = latest_promotion(platform, "energy_forecast")
    assert not promotion["promoted"]
    assert promotion["champion_before"] == promotion["champion_after"] == int(champion.version)
    assert "already the champion" in promotion["reason"]
    assert "same data version and code version" in promotion["reason"]
    gate = gate_check(result)
    assert gate.passed, "keeping the champion on unchanged data is nothing to act on"
    assert "already the champion" in gate.description
    # The champion's record of why it was promoted stays.
    kept = tracking(platform).model_version("energy_forecast", "champion")
    assert kept.version == champion.version and kept.tags["gate"].startswith("promoted")


def train_energy(platform, spec):
    """Model, evaluation and champion of ``spec`` (an edited energy_forecast) in ``platform``:
    (the champion before, the versions before, the run)."""
    champion = tracking(platform).model_version("energy_forecast", "champion")
    before = versions(platform, "energy_forecast")
    result = materialize(
        build_pipeline_assets(spec),
        selection=[f"energy_forecast/{s}" for s in ("model", "evaluation", "champion")],
        resources=platform.defs.resources,
        instance=platform.instance,
    )
    assert result.success
    return champion, before, result


def test_a_challenger_that_ties_the_champion_is_not_promoted(world, tmp_path):
    platform, _ = world
    spec = PIPELINES["energy_forecast"]
    # Another code version (the spec's file edited) on the same data: a new version, trained the
    # same way, with the champion's metrics to the last digit.
    edited = tmp_path / "energy_forecast.py"
    edited.write_text(
        Path(spec.source_file).read_text() + "\n# a comment changes the code version\n"
    )
    champion, before, result = train_energy(
        platform, dataclasses.replace(spec, source_file=str(edited))
    )
    assert len(versions(platform, "energy_forecast")) == len(before) + 1
    model = {
        e.asset_key.path[-1]: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }["model"]
    assert "code version differs from the champion's" in model["training"].value
    promotion = latest_promotion(platform, "energy_forecast")
    assert promotion["challenger_value"] == promotion["champion_value"]
    assert not promotion["promoted"] and "ties the champion" in promotion["reason"]
    assert (
        tracking(platform).model_version("energy_forecast", "champion").version == champion.version
    )
    gate = gate_check(result)
    assert "ties the champion" in gate.description


def test_a_reused_champion_that_no_longer_clears_the_baseline_warns(world):
    platform, _ = world
    spec = PIPELINES["energy_forecast"]
    # A margin no model reaches stands for a validation window on which the champion no longer
    # beats the baseline: the gate is no training input, so the model step reuses the champion.
    champion, before, result = train_energy(platform, dataclasses.replace(spec, gate=Gate(0.99)))
    assert versions(platform, "energy_forecast") == before
    promotion = latest_promotion(platform, "energy_forecast")
    assert promotion["challenger_version"] == int(champion.version)
    assert "already the champion" in promotion["reason"] and "baseline" in promotion["reason"]
    gate = gate_check(result)
    assert gate.passed is False and gate.severity.value == "WARN"
    assert f"champion v{champion.version} keeps serving" in gate.description
    assert tracking(platform).model_version("energy_forecast", "champion").version == (
        champion.version
    )


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_every_step_links_to_its_evidence_both_ways(world, pipeline):
    platform, result = world
    events = {
        e.asset_key.path[-1]: e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[0] == pipeline
    }
    client = tracking(platform).client()
    champion = client.get_model_version_by_alias(pipeline, "champion")
    run = client.get_run(champion.run_id)
    mlflow_ui = "http://127.0.0.1:5000"
    run_url = f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    version_url = f"{mlflow_ui}/#/models/{pipeline}/versions/{champion.version}"
    for step in ("model", "evaluation"):
        assert events[step]["mlflow run"] == MetadataValue.url(run_url), step
        assert events[step]["mlflow model version"] == MetadataValue.url(version_url), step
    assert events["champion"]["mlflow model version"] == MetadataValue.url(version_url)

    dagster_run = f"http://127.0.0.1:3000/runs/{result.run_id}"
    assert run.data.tags["dagster/run_url"] == dagster_run
    assert f"]({dagster_run})" in run.data.tags["mlflow.note.content"]  # the run's description
    assert champion.tags["dagster/run_url"] == dagster_run
    assert f"]({dagster_run})" in champion.description

    # Every check the factory's steps report says in one line how it went.
    factory_checks = {"no_future_leakage", "worst_segment", "promotion_gate"}
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.asset_key.path[0] == pipeline and evaluation.check_name in factory_checks:
            assert evaluation.description and len(evaluation.description) <= 200, evaluation


def test_a_rebuild_with_nothing_new_writes_and_checks_no_row(world):
    platform, first = world
    keys = [["energy_forecast", "sandbox"], ["energy_forecast", "features"]]

    def validated(result) -> dict[str, int]:
        return {
            e.asset_key.to_user_string(): e.metadata["rows validated"].value
            for e in result.get_asset_check_evaluations()
            if e.check_name == "schema" and e.asset_key.path in keys
        }

    def counts() -> dict[str, int]:
        return {t: platform.sql(f"SELECT count(*) FROM energy_forecast.{t}")[0][0] for _, t in keys}

    stored = counts()
    # The first build wrote (and checked) every row; a rebuild on the same data writes none.
    assert validated(first) == {f"energy_forecast/{t}": n for t, n in stored.items()}
    again = platform.materialize(AssetSelection.assets(*keys))
    assert again.success
    assert validated(again) == {f"energy_forecast/{t}": 0 for t in stored}
    for event in again.get_asset_materialization_events():  # the preview shows the stored rows
        preview = event.materialization.metadata["preview"].value
        assert preview.count("\n") >= 2 + PREVIEW_ROWS - 1, preview
    assert counts() == stored


def test_gate_rules():
    gate = Gate(min_improvement_vs_baseline=0.15, min_improvement_vs_champion=0.02)
    assert decide("regression", gate, 0.80, 1.0, None).promote
    assert not decide("regression", gate, 0.90, 1.0, None).promote  # 10% < 15% over the baseline
    assert not decide("regression", gate, 0.80, 1.0, 0.81).promote  # 1.2% < 2% over the champion
    assert decide("classification", Gate(0.2), 0.8, 0.5, None).promote  # AUC 60% of the way to 1
    assert not decide("classification", Gate(0.2), 0.55, 0.5, None).promote
    assert not decide("regression", gate, float("nan"), 1.0, None).promote
    # A tie is no improvement, even when the gate asks for none over the champion.
    tie = decide("regression", Gate(0.15), 0.80, 1.0, 0.80)
    assert not tie.promote and "ties the champion" in tie.reason
    assert decide("regression", Gate(0.15), 0.79, 1.0, 0.80).promote


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_leakage_guard_catches_a_feature_that_looks_ahead(world, pipeline):
    platform, _ = world
    spec = PIPELINES[pipeline]
    sandbox = platform.frame(f"SELECT * FROM {pipeline}.sandbox")
    built = spec.build_examples(sandbox)
    clean = future_leaks(spec, sandbox, built)
    assert clean.is_empty() and clean.columns == ["cut", "customer_id", "as_of", "column"]

    # The same examples in another row order are no leak (the guard's row-for-row shortcut fails,
    # the join decides).
    def shuffled_build(frame: pl.DataFrame) -> pl.DataFrame:
        return spec.build_examples(frame).sample(fraction=1.0, shuffle=True, seed=frame.height)

    shuffled = dataclasses.replace(spec, build_examples=shuffled_build)
    assert future_leaks(shuffled, sandbox, shuffled_build(sandbox)).is_empty()

    # Tomorrow's consumption smuggled into a feature column.
    first = spec.feature_columns[0]
    future = pl.col("kwh").shift(-1).over("customer_id")

    def leaky_build(frame: pl.DataFrame) -> pl.DataFrame:
        tomorrow = frame.sort("customer_id", "day").select(
            "customer_id", pl.col("day").alias("as_of"), future.alias("_t")
        )
        return (
            spec.build_examples(frame)
            .join(tomorrow, on=["customer_id", "as_of"], how="left")
            .with_columns(pl.col("_t").alias(first))
            .drop("_t")
        )

    leaky = dataclasses.replace(spec, build_examples=leaky_build)
    leaks = future_leaks(leaky, sandbox, built)
    assert leaks.height > 0 and set(leaks["column"]) == {first}

    # Above its sample size the guard rebuilds from a few customers spread over the ids: features
    # relative to the day's other customers still agree, and the planted leak is still caught.
    assert future_leaks(spec, sandbox, built, sample=3).is_empty()
    sampled = future_leaks(leaky, sandbox, built, sample=3)
    assert set(sampled["column"]) == {first}
    customers = sandbox["customer_id"].n_unique()
    assert 0 < sampled["customer_id"].n_unique() <= 3 < customers

    # An example that exists only once tomorrow's reading is known: its row leaks, whatever it holds.
    def build_needing_tomorrow(frame: pl.DataFrame) -> pl.DataFrame:
        return leaky_build(frame).filter(pl.col(first).is_not_null())

    leaks = future_leaks(
        dataclasses.replace(spec, build_examples=build_needing_tomorrow),
        sandbox,
        build_needing_tomorrow(sandbox),
    )
    assert leaks.height > 0 and set(leaks["column"]) == {"<row>"}
    assert leaks.columns == ["cut", "customer_id", "as_of", "column"]


def _weekly_spec() -> PipelineSpec:
    """A third pipeline written in a test: next week's mean consumption from this week's."""
    import pandera.polars as pa

    class Features(pa.DataFrameModel):
        mean_7: float = pa.Field(nullable=True, description="Mean daily kWh over the last 7 days")

    def build(sandbox: pl.DataFrame) -> pl.DataFrame:
        kwh = pl.col("kwh")
        return (
            sandbox.sort("customer_id", "day")
            .with_columns(
                as_of=pl.col("day"),
                mean_7=kwh.rolling_mean(7).over("customer_id"),
                label=kwh.rolling_mean(7).shift(-7).over("customer_id"),
            )
            .filter(pl.col("mean_7").is_not_null())
        )

    energy = PIPELINES["energy_forecast"]
    return PipelineSpec(
        name="weekly_mean",
        description="Next week's mean daily consumption",
        task="regression",
        sandbox_query=energy.sandbox_query,
        sandbox_deps=energy.sandbox_deps,
        sandbox_schema=energy.sandbox_schema,
        entity=energy.entity,
        time="day",
        build_examples=build,
        horizon_days=7,
        features_schema=Features,
        baseline=lambda train, frame: frame["mean_7"].to_numpy(),
        gate=Gate(min_improvement_vs_baseline=-1.0),  # any model will do: this is about the wiring
        num_boost_round=20,
    )


def test_a_third_pipeline_needs_no_change_to_the_factory(world):
    platform, _ = world
    assets = build_pipeline_assets(_weekly_spec())
    assert [a.key.to_user_string() for a in assets] == [
        f"weekly_mean/{s}"
        for s in ("sandbox", "features", "model", "evaluation", "champion", "predictions", "drift",
                  "live_accuracy")
    ]  # fmt: skip
    result = materialize(assets, resources=platform.defs.resources, instance=platform.instance)
    assert result.success
    assert platform.sql("SELECT count(*) FROM weekly_mean.predictions")[0][0] > 0
    assert tracking(platform).model_version("weekly_mean", "champion") is not None


def test_served_champion_answers_a_real_request(world):
    platform, _ = world
    spec = PIPELINES["energy_forecast"]
    score = platform.frame(
        "SELECT * FROM energy_forecast.features WHERE split = 'score' ORDER BY customer_id LIMIT 3"
    )
    x = feature_matrix(score, spec)
    records = json.loads(x.to_json(orient="records"))
    served = np.array(
        score_served(tracking(platform).tracking_uri, "models:/energy_forecast@champion", records),
        dtype=float,
    )
    stored = platform.frame(
        "SELECT prediction FROM energy_forecast.predictions ORDER BY customer_id LIMIT 3"
    )
    np.testing.assert_allclose(served, stored["prediction"].to_numpy(), rtol=1e-9)
