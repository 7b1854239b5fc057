"""The analytical pipelines on small generated data: both chains materialized through the real defs,
MLflow tracking and registry, reproducibility, the gate, the leakage guard, a third pipeline from
the unchanged factory, and a request to MLflow's own scoring server."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import AssetSelection, materialize

from dp_assets.analysis.factory import build_pipeline_assets, feature_matrix
from dp_assets.analysis.gate import decide
from dp_assets.analysis.leakage import future_leaks
from dp_assets.analysis.schema import Example
from dp_assets.analysis.spec import Gate, PipelineSpec
from dp_assets.metadata import PREVIEW_ROWS
from dp_assets_tests.conftest import PIPELINES

pytestmark = pytest.mark.slow


def tracking(platform):
    return platform.defs.resources["mlflow_tracking"]


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
    assert metrics["plots"].value.count("data:image/png;base64,") == 2
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


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_registered_model_names_its_lineage_and_metrics_are_in_mlflow(world, pipeline):
    platform, result = world
    client = tracking(platform).client()
    champion = client.get_model_version_by_alias(pipeline, "champion")
    assert champion.tags["dagster/run_id"] == result.run_id
    assert champion.tags["dagster/code_version"].startswith("1-")
    assert champion.tags[f"data_version/{pipeline}/features"]
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


def test_retraining_is_reproducible_and_a_worse_model_is_not_promoted(world):
    platform, _ = world
    chain = AssetSelection.assets(
        *[["energy_forecast", s] for s in ("model", "evaluation", "champion", "predictions")]
    )
    first = overall(platform, "energy_forecast")

    # Same data, code and seed: the same metrics, and the gate promotes the new version.
    assert platform.materialize(chain).success
    assert overall(platform, "energy_forecast") == first
    champion = tracking(platform).model_version("energy_forecast", "champion")

    # A deliberately weak challenger (one boosting round) is rejected; the champion stays.
    config = {"ops": {"energy_forecast__model": {"config": {"num_boost_round": 1}}}}
    result = platform.materialize(chain, run_config=config)
    assert result.success, "a rejected challenger must not stop predictions"
    gate = [e for e in result.get_asset_check_evaluations() if e.check_name == "promotion_gate"][0]
    assert gate.passed is False and gate.severity.value == "WARN"
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

    class Features(Example):
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
            .select([c for c in Features.to_schema().columns if c != "split"])
        )

    energy = PIPELINES["energy_forecast"]
    return PipelineSpec(
        name="weekly_mean",
        description="Next week's mean daily consumption",
        task="regression",
        sandbox_query=energy.sandbox_query,
        sandbox_deps=energy.sandbox_deps,
        sandbox_schema=energy.sandbox_schema,
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_champion_answers_a_real_request(world):
    platform, _ = world
    spec = PIPELINES["energy_forecast"]
    score = platform.frame(
        "SELECT * FROM energy_forecast.features WHERE split = 'score' ORDER BY customer_id LIMIT 3"
    )
    x = feature_matrix(score, spec)
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking(platform).tracking_uri,
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
    }
    server = subprocess.Popen(
        [
            str(Path(venv_bin) / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/energy_forecast@champion",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--env-manager",
            "local",
        ],  # fmt: skip
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"scoring server did not start: {server.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        body = json.dumps(
            {"dataframe_split": json.loads(x.to_json(orient="split", index=False))}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            served = np.array(json.loads(response.read())["predictions"], dtype=float)
    finally:
        os.killpg(server.pid, 9)
        server.wait()
    stored = platform.frame(
        "SELECT prediction FROM energy_forecast.predictions ORDER BY customer_id LIMIT 3"
    )
    np.testing.assert_allclose(served, stored["prediction"].to_numpy(), rtol=1e-9)
