"""Models watched in production: drift, live accuracy on actuals that arrive after the predictions,
the shadow challenger, and the worst-segment check, on a world whose last days arrive later."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, AssetSelection, RunRequest, build_sensor_context

from dp_assets.analysis.metrics import regression
from dp_assets.analysis.monitoring import psi
from dp_assets.automation import TRAINING_STEPS, build_retrain_sensor
from dp_projects.utility.sample_data.generator import generate
from dp_assets_tests.conftest import PIPELINES, Platform, WORLD, isolated_platform

pytestmark = pytest.mark.slow
LATE_FROM = "2024-04-21"  # the world's last three days of readings arrive after the first run
TRAINING = AssetSelection.assets(*[[p, s] for p in PIPELINES for s in TRAINING_STEPS])
ENERGY_TRAINING = AssetSelection.assets(*[["energy_forecast", s] for s in TRAINING_STEPS])


def test_psi_is_zero_for_the_same_population_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 5000)
    assert psi(base, rng.normal(0, 1, 5000)) < 0.02
    assert psi(base, rng.normal(1, 1, 5000)) > 0.25
    with_gaps = np.where(rng.random(5000) < 0.3, np.nan, rng.normal(0, 1, 5000))
    assert psi(base, with_gaps) > 0.25, "a share of missing values is a shift too"
    assert psi(np.ones(100), np.ones(50)) == pytest.approx(0.0)


@dataclass
class Monitored:
    platform: Platform
    first: object  # run results
    second: object
    shadow_version: int


def checks(result) -> dict[tuple[str, str], object]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


@pytest.fixture(scope="module")
def monitored(tmp_path_factory) -> Monitored:
    root = tmp_path_factory.mktemp("monitoring")
    with isolated_platform(root) as platform:
        generate(platform.settings.data_dir, WORLD)
        held = root / "held"
        for source in ("meters_vendor_a", "meters_vendor_b"):
            for path in (platform.settings.inbox / source).iterdir():
                day = "".join(c for c in path.stem if c.isdigit())
                if day >= LATE_FROM.replace("-", ""):
                    (held / source).mkdir(parents=True, exist_ok=True)
                    shutil.move(path, held / source / path.name)  # keeps the mtime
        first = platform.materialize()
        assert first.success
        # A weak challenger (one boosting round) is rejected: it predicts in the shadow from now on.
        config = {"ops": {"energy_forecast__model": {"config": {"num_boost_round": 1}}}}
        chain = ENERGY_TRAINING | AssetSelection.assets(["energy_forecast", "predictions"])
        assert platform.materialize(chain, run_config=config).success
        (shadow,) = platform.sql(
            "SELECT DISTINCT challenger_version FROM energy_forecast.predictions"
        )
        for source in ("meters_vendor_a", "meters_vendor_b"):
            for path in (held / source).iterdir():
                shutil.move(path, platform.settings.inbox / source / path.name)
        second = platform.materialize(AssetSelection.all() - TRAINING)  # new data, same models
        assert second.success
        yield Monitored(platform, first, second, shadow[0])


def test_drift_measures_every_feature_each_time(monitored):
    drift = monitored.platform.frame("SELECT * FROM energy_forecast.drift")
    spec = PIPELINES["energy_forecast"]
    assert drift["computed_at"].n_unique() == 2  # the first run, then the new data
    latest = drift.filter(pl.col("computed_at") == drift["computed_at"].max())
    assert sorted(latest["feature"]) == sorted(spec.feature_columns)
    assert latest["recent_window"].unique().item().endswith("2024-04-23")
    # Spring comes: temperature shifts far beyond the threshold; the weekday mix does not.
    psi_of = dict(latest.select("feature", "psi").iter_rows())
    assert psi_of["temperature_c"] > spec.drift_threshold > psi_of["target_weekday"]
    check = checks(monitored.second)[("energy_forecast/drift", "psi_below_threshold")]
    assert check.passed is False and check.severity.value == "WARN"


def test_live_accuracy_joins_predictions_with_the_actuals_that_arrived(monitored):
    platform = monitored.platform
    live = platform.frame("SELECT * FROM energy_forecast.live_accuracy WHERE metric = 'mae'")
    assert live["as_of"].cast(pl.String).to_list() == ["2024-04-20", "2024-04-20"]
    # Recomputed by hand: the stored predictions against next-day kWh from the features table.
    joined = platform.frame(
        "SELECT p.prediction, p.challenger_prediction, f.label FROM energy_forecast.predictions p "
        "JOIN energy_forecast.features f USING (customer_id, as_of) WHERE p.as_of = '2024-04-20'"
    )
    truth = joined["label"].to_numpy()
    by_model = dict(live.select("model", "value").iter_rows())
    assert by_model["champion"] == pytest.approx(
        regression(truth, joined["prediction"].to_numpy())["mae"]
    )
    assert by_model["challenger"] == pytest.approx(
        regression(truth, joined["challenger_prediction"].to_numpy())["mae"]
    )
    versions = dict(live.select("model", "model_version").iter_rows())
    assert versions == {"champion": 1, "challenger": monitored.shadow_version}


def test_the_shadow_challenger_is_compared_live_and_never_served(monitored):
    platform = monitored.platform
    rows = platform.frame("SELECT * FROM energy_forecast.predictions WHERE as_of = '2024-04-23'")
    assert set(rows["model_version"]) == {1}
    assert set(rows["challenger_version"]) == {monitored.shadow_version}
    assert rows["challenger_prediction"].null_count() == 0
    (materialization,) = [
        m
        for m in monitored.second.get_asset_materialization_events()
        if m.asset_key == AssetKey(["energy_forecast", "live_accuracy"])
    ]
    metadata = materialization.materialization.metadata
    assert metadata["shadow rows"].value > 0
    assert metadata["challenger vs champion (live)"].value < 0, "one boosting round is worse"
    # The churn challenger was promoted: no shadow.
    assert platform.sql("SELECT count(challenger_version) FROM customer_churn.predictions") == [
        (0,)
    ]


def test_degraded_live_accuracy_or_drift_starts_retraining(monitored):
    results = checks(monitored.second)
    live = results[("energy_forecast/live_accuracy", "accuracy_holds")]
    assert "mae at evaluation" in live.metadata and "relative change" in live.metadata
    sensor = build_retrain_sensor(list(PIPELINES.values()), "train_models")
    with build_sensor_context(instance=monitored.platform.instance) as context:
        requests = sensor(context)
    energy = [r for r in requests if r.asset_selection[0].path[0] == "energy_forecast"]
    assert len(energy) == 1 and isinstance(energy[0], RunRequest)
    assert "energy_forecast/drift:psi_below_threshold" in energy[0].tags["dp/retrain_reason"]


def test_evaluation_reports_the_worst_segment(monitored):
    for pipeline in PIPELINES:
        check = checks(monitored.first)[(f"{pipeline}/evaluation", "worst_segment")]
        assert check.severity.value == "WARN"
        worst = check.metadata["worst segment"].value
        column, _, value = worst.partition(" = ")
        assert column in ("region", "tariff") and value
        assert check.passed == (check.metadata["worst gap"].value <= 0.5)


def test_pipeline_health_reads_the_event_log(monitored):
    platform = monitored.platform
    health = platform.frame("SELECT * FROM monitoring.pipeline_health")
    vendor_a = health.filter(pl.col("asset") == "formatted/meters_vendor_a").sort("materialized_at")
    assert vendor_a.height == 2  # the first run and the late files
    events = [
        m.materialization.metadata
        for result in (monitored.first, monitored.second)
        for m in result.get_asset_materialization_events()
        if m.asset_key == AssetKey(["formatted", "meters_vendor_a"])
    ]
    assert vendor_a["rows_in"].to_list() == [e["records in"].value for e in events]
    assert vendor_a["rows_rejected"].to_list() == [e["rows rejected"].value for e in events]
    assert vendor_a["reject_rate"].to_list() == pytest.approx(
        [e["rows rejected"].value / e["records in"].value for e in events]
    )
    assert (
        health.filter(pl.col("asset").str.starts_with("exploitation/"))["step_seconds"].null_count()
        == 0
    )


def test_kpis_and_model_accuracy_tables(monitored):
    platform = monitored.platform
    kpis = platform.frame("SELECT * FROM reporting.kpis")
    whole = kpis.filter(pl.col("region") == "all").sort("month")
    by_region = (
        kpis.filter(pl.col("region") != "all")
        .group_by("month")
        .agg(pl.col("active_customers", "churned_customers", "kwh").sum())
    )
    joined = whole.join(by_region, on="month", suffix="_regions")
    assert (joined["active_customers"] == joined["active_customers_regions"]).all()
    assert joined["kwh"].to_list() == pytest.approx(joined["kwh_regions"].to_list(), rel=1e-9)
    (ended,) = platform.sql(
        "SELECT count(*) FROM exploitation.customers WHERE contract_end <= DATE '2024-04-30'"
    )[0]
    assert whole["churned_customers"].sum() == ended
    accuracy = platform.frame(
        "SELECT * FROM reporting.model_accuracy WHERE pipeline = 'energy_forecast' AND metric = 'mae'"
    )
    live = platform.frame(
        "SELECT model, value FROM energy_forecast.live_accuracy WHERE metric = 'mae'"
    )
    assert dict(accuracy.select("model", "value").iter_rows()) == pytest.approx(
        dict(live.iter_rows())
    )


def test_dp_report_writes_one_page(monitored, tmp_path):
    from dp_assets.operations.report import write_report

    page = write_report(monitored.platform.settings, tmp_path / "report.html").read_text()
    for heading in ("Data quality", "energy_forecast", "customer_churn", "Business KPIs"):
        assert f"<h2>{heading}</h2>" in page
    assert "Live accuracy (mae on actuals)" in page and "PSI per feature" not in page  # alt text
    assert page.count("data:image/png;base64,") >= 5  # churn has no actuals yet: no live plot
