"""Models watched in production: drift, live accuracy on actuals that arrive after the predictions,
the shadow challenger, and the worst-segment check, on a world whose last days arrive later."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, AssetSelection, SkipReason, build_sensor_context

from dp_assets.analysis.metrics import regression
from dp_assets.analysis import monitoring
from dp_assets.analysis.monitoring import drift, psi
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


def test_psi_of_a_near_constant_feature_stays_small():
    # 99% one value: a recent window of that value give or take rounding is no shift; under a
    # 1e-4 clip and edges on the value itself, rounding across the edge gave PSI 5 to 10.
    rng = np.random.default_rng(2)
    train = np.where(rng.random(5000) < 0.99, 1.0, 1.1)
    assert psi(train, np.full(1000, 1.0 - 1e-9)) < 0.05
    assert psi(train, np.full(1000, 1.0 + 1e-9)) < 0.05
    # A value training never held lands in the bin of its nearest neighbour, and an empty bin
    # weighs half a row: the index stays finite and of the order of the log of the sample size.
    assert psi(train, np.full(1000, 5.0)) < 2 * np.log(2 * 1000)


DAY0 = dt.date(2023, 1, 1)


def world(days: int, customers: int = 200, seed: int = 5) -> pl.DataFrame:
    """Daily examples of ``customers`` over ``days`` from DAY0: a seasonal temperature (coldest
    mid-January), consumption that heats with it, a monthly tariff price, the weekday."""
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(days), customers)
    as_of = np.datetime64(DAY0) + day.astype("timedelta64[D]")
    doy = (as_of - as_of.astype("datetime64[Y]")).astype(int)
    # One weather per day, shared by everybody (the sample's is per region and day).
    temperature = 8 - 12 * np.cos(2 * np.pi * (doy - 15) / 365) + rng.normal(0, 2, days)[day]
    month = as_of.astype("datetime64[M]").astype(int)
    return pl.DataFrame(
        {
            "customer_id": np.tile(np.arange(customers), days).astype(str),
            "as_of": as_of,
            "temperature_c": temperature,
            "kwh": np.clip(14 - 0.4 * temperature + rng.normal(0, 2, day.size), 0, None),
            "price": 0.6 * 1.01 ** (month - month.min()),
            "weekday": (day + 6) % 7 + 1,
        }
    ).with_columns(pl.col("as_of").cast(pl.Date))


def measured(examples, train_until, recent_from, **rules) -> dict[str, dict]:
    """Drift per feature of the rows up to ``train_until`` against those from ``recent_from``."""
    train = examples.filter(pl.col("as_of") <= train_until)
    recent = examples.filter(pl.col("as_of") >= recent_from)
    rules = {"threshold": 0.25, "min_sample": 150, "entity": "customer_id", **rules}
    frame = drift(train, recent, ["temperature_c", "kwh", "price", "weekday"], **rules)
    return {row["feature"]: row for row in frame.iter_rows(named=True)}


WINTER, SPRING = dt.date(2024, 3, 31), dt.date(2024, 5, 7)
SEASONAL = {"seasonal": ("temperature_c", "kwh"), "expected_to_move": ("price",)}


def test_a_season_change_is_reported_not_fired():
    examples = world(500).filter(pl.col("as_of") >= dt.date(2024, 1, 1))  # no earlier spring
    rows = measured(examples, WINTER, SPRING, **SEASONAL)
    assert rows["kwh"]["status"] == rows["price"]["status"] == "expected to move", rows
    assert "0 rows of these calendar days" in rows["kwh"]["reason"]
    # A week of weather is 8 observations however many customers share it: PSI cannot judge it.
    assert rows["temperature_c"]["status"] == "not evaluated", rows["temperature_c"]
    assert rows["temperature_c"]["reason"].startswith("8 distinct (as_of, value) pairs")
    assert not any(row["drifted"] for row in rows.values())
    assert rows["weekday"]["status"] == "stable"
    SEASON_CHANGE_PSI["kwh, winter against spring"] = rows["kwh"]["psi"]
    # Undeclared, the same season change is drift: the declaration is what tells them apart.
    assert measured(examples, WINTER, SPRING)["kwh"]["status"] == "drifted"


def test_a_seasonal_feature_is_compared_with_the_same_days_of_an_earlier_year():
    kwh = measured(world(500), WINTER, SPRING, **SEASONAL)["kwh"]
    assert kwh["status"] == "stable", kwh
    assert kwh["train_window"] == "2023-05-07..2023-05-14"
    SEASON_CHANGE_PSI["kwh, spring against the spring before"] = kwh["psi"]


SEASON_CHANGE_PSI: dict[str, float] = {}


def planted(examples: pl.DataFrame, feature: str, change: pl.Expr) -> pl.DataFrame:
    """``examples`` with ``feature`` replaced by ``change`` from SPRING on: a feed break."""
    return examples.with_columns(
        pl.when(pl.col("as_of") >= SPRING).then(change).otherwise(pl.col(feature)).alias(feature)
    )


@pytest.mark.parametrize(
    "feature, change, sign",
    [
        ("kwh", pl.col("kwh") * 1000, "unit change"),  # Wh delivered as kWh
        ("price", pl.col("price") * 1000, "unit change"),  # PLN/MWh as PLN/kWh
        ("temperature_c", pl.lit(4.2), "stuck"),  # the weather feed repeats one reading
        # Each meter repeats its last reading: the spread over customers stays, the days stop.
        ("kwh", pl.col("kwh").filter(pl.col("as_of") == SPRING).first().over("customer_id"), "stuck"),
        ("temperature_c", pl.when(pl.col("customer_id").cast(pl.Int64) < 20).then(None)
         .otherwise(pl.col("temperature_c")), "missing"),
    ],
)  # fmt: skip
def test_a_feed_break_fires_on_any_feature_seasonal_or_not(feature, change, sign):
    broken = planted(world(500).filter(pl.col("as_of") >= dt.date(2024, 1, 1)), feature, change)
    row = measured(broken, WINTER, SPRING, **SEASONAL)[feature]
    assert row["status"] == "feed break" and row["drifted"] is True, row
    assert sign in row["reason"]
    BREAK_PSI[f"{feature}: {sign}"] = row["psi"]


BREAK_PSI: dict[str, float] = {}


def test_a_month_of_one_series_is_narrow_not_a_unit_change():
    # One region over two years (the PJM example): a month of the day of the year has a twelfth
    # of its spread over the years, inside the range training held.
    days = pl.date_range(DAY0, dt.date(2024, 8, 31), eager=True)
    series = pl.DataFrame({"region": "east", "as_of": days, "doy": days.dt.ordinal_day()})
    train, recent = series.head(-31), series.tail(31)
    rules = dict(threshold=0.25, min_sample=150, entity="region")
    (row,) = drift(train, recent, ["doy"], **rules).iter_rows(named=True)
    assert row["status"] == "not evaluated", row
    assert row["reason"] == "1 region values in a window: fewer than the 150 a PSI needs"
    (row,) = drift(train, recent.with_columns(pl.col("doy") / 1000), ["doy"], **rules).iter_rows(
        named=True
    )
    assert row["status"] == "feed break" and "unit change" in row["reason"], row


def test_near_constant_and_warming_up_features_do_not_drift():
    # price_change_30d of the sample: half the training rows are null (the first 30 days of
    # history), a few ratios; the recent window holds no null and the same ratios.
    rng = np.random.default_rng(3)
    ratios = rng.choice([1.005, 1.0101, 1.025, 1.0506], 6000, p=[0.37, 0.02, 0.57, 0.04])
    train = pl.DataFrame({"ratio": ratios}).with_columns(
        pl.when(pl.Series(rng.random(6000) < 0.5))
        .then(None)
        .otherwise(pl.col("ratio"))
        .alias("ratio")
    )
    recent = pl.DataFrame({"ratio": rng.choice([1.005, 1.0051, 1.025], 1200, p=[0.25, 0.16, 0.59])})
    (row,) = drift(train, recent, ["ratio"], threshold=0.25, min_sample=150).iter_rows(named=True)
    assert row["status"] == "stable" and row["psi"] < 0.25, row


def test_a_discrete_feature_of_a_snapshot_is_judged_on_its_rows():
    # 5,000 rows a window: ages of 17..90 then 60..90 (30 values), occupations of 14 levels then
    # 2. Rows sharing a value of a snapshot are not one observation: counted once, both hid.
    rng = np.random.default_rng(4)
    levels = [f"job{i}" for i in range(14)]
    train = pl.DataFrame(
        {"age": rng.integers(17, 91, 5000), "occupation": rng.choice(levels, 5000)}
    )
    recent = pl.DataFrame(
        {"age": rng.integers(60, 91, 5000), "occupation": rng.choice(levels[:2], 5000)}
    )
    rows = drift(train, recent, ["age", "occupation"], threshold=0.25, min_sample=150)
    for row in rows.iter_rows(named=True):
        assert row["status"] == "drifted" and row["psi"] > 0.25, row


def test_a_value_shared_by_entities_on_a_day_counts_once_per_day():
    # A week of one weather shared by 200 customers is 7 observations; a customer's own age is
    # one per customer and day, however few distinct ages there are.
    examples = world(30).with_columns(age=20 + pl.col("customer_id").cast(pl.Int64) % 30)
    train, recent = examples.head(-7 * 200), examples.tail(7 * 200)
    rules = dict(threshold=0.25, min_sample=150, entity="customer_id")
    rows = {
        r["feature"]: r
        for r in drift(train, recent, ["temperature_c", "age"], **rules).iter_rows(named=True)
    }
    assert rows["temperature_c"]["status"] == "not evaluated", rows
    assert rows["temperature_c"]["reason"].startswith("7 distinct (as_of, value) pairs")
    assert rows["age"]["status"] == "stable", rows["age"]


def test_a_feature_constant_in_training_can_still_move():
    assert psi(np.zeros(500), np.full(500, 1000.0)) > 0.25
    assert psi(np.full(500, 3.0), np.full(500, 3.0 + 1e-12)) == pytest.approx(0.0)
    train = pl.DataFrame({"x": np.zeros(500), "kind": ["a"] * 500})
    recent = pl.DataFrame({"x": np.full(500, 1000.0), "kind": ["b"] * 500})
    rows = {
        r["feature"]: r
        for r in drift(train, recent, ["x", "kind"], threshold=0.25, min_sample=150).iter_rows(
            named=True
        )
    }
    assert rows["x"]["status"] == "feed break" and rows["x"]["psi"] > 0.25, rows["x"]
    assert rows["kind"]["status"] == "drifted" and rows["kind"]["psi"] > 0.25, rows["kind"]
    (row,) = drift(train, train, ["x"], threshold=0.25, min_sample=150).iter_rows(named=True)
    assert row["status"] == "stable" and row["psi"] == 0.0, row


def test_drift_reports_the_psi_of_the_known_values():
    # One PSI implementation: what drift stores is psi() of the values both windows know.
    rng = np.random.default_rng(6)
    train = pl.DataFrame({"x": np.where(rng.random(3000) < 0.3, np.nan, rng.normal(0, 1, 3000))})
    recent = pl.DataFrame({"x": rng.normal(0.3, 1, 1000)})
    (row,) = drift(train, recent, ["x"], threshold=0.25, min_sample=150).iter_rows(named=True)
    known = train["x"].drop_nans().to_numpy()
    assert row["psi"] == pytest.approx(psi(known, recent["x"].to_numpy()), abs=1e-6)


def test_the_drift_check_says_what_it_measured():
    from dp_assets.analysis.monitoring_assets import drift_description, drift_metadata

    train = pl.DataFrame({"x": np.arange(100.0)})
    unmeasured = drift(train, train.head(20), ["x"], threshold=0.25, min_sample=150)
    assert "max psi" not in drift_metadata(unmeasured)
    measured = drift(train, train, ["x"], threshold=0.25, min_sample=50)
    assert drift_metadata(measured)["max psi"].value == 0.0
    broken = drift(train, train * 1000, ["x"], threshold=0.25, min_sample=50)
    text = drift_description(broken.filter("drifted"), {})
    assert text.endswith("retraining requested"), text


def test_too_few_rows_are_not_evaluated():
    examples = world(120, customers=40)
    recent = examples.filter(pl.col("as_of") >= dt.date(2023, 4, 24))  # a week of 40 customers
    frame = drift(examples, recent, ["kwh"], threshold=0.25, min_sample=150, entity="customer_id")
    (row,) = frame.iter_rows(named=True)
    assert row["status"] == "not evaluated" and row["drifted"] is False and row["psi"] is None
    assert row["reason"] == "40 customer_id values in a window: fewer than the 150 a PSI needs"
    one_day = examples.filter(pl.col("as_of") == examples["as_of"].max()).head(20)
    (row,) = drift(examples, one_day, ["kwh"], threshold=0.25, min_sample=150).iter_rows(named=True)
    assert row["status"] == "not evaluated" and row["reason"].startswith("20 rows")


def test_a_drift_window_is_at_least_a_week():
    with pytest.raises(ValueError, match="at least 7"):
        replace(PIPELINES["energy_forecast"], drift_window_days=1)


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
    assert latest["recent_window"].unique().to_list() == ["2024-04-17..2024-04-23"]
    # Spring comes, and nothing broke. The world's 40 customers are too few for a PSI (each
    # customer's week is one trajectory): said so, no failure.
    reasons = dict(latest.select("feature", "reason").iter_rows())
    assert set(latest["status"]) == {"not evaluated"}, reasons
    assert reasons["lag_1"].endswith(
        "customer_id values in a window: fewer than the 150 a PSI needs"
    )
    check = checks(monitored.second)[("energy_forecast/drift", "psi_below_threshold")]
    assert check.passed is True and check.description.startswith("no feature drifted")
    # The churn window is a week too, not the single scored day the features table keeps.
    churn = monitored.platform.frame("SELECT * FROM customer_churn.drift")
    first, latest = churn.partition_by("computed_at", maintain_order=True)
    assert first["recent_window"].unique().to_list() == ["2024-04-14..2024-04-20"]
    assert latest["recent_window"].unique().to_list() == ["2024-04-17..2024-04-23"]


def test_a_feed_break_planted_in_the_sample_fires_and_the_season_does_not(monitored):
    """The stored training rows against the latest week rebuilt from the sandbox, as the drift
    asset compares them, with a break planted in that week."""
    platform, spec = monitored.platform, PIPELINES["energy_forecast"]
    train = platform.frame("SELECT * FROM energy_forecast.features WHERE split = 'train'")
    built = spec.build_examples(platform.frame("SELECT * FROM energy_forecast.sandbox"))
    recent = built.filter(pl.col("as_of") >= dt.date(2024, 4, 17))
    rules = dict(threshold=spec.drift_threshold, min_sample=spec.drift_min_sample,
                 seasonal=spec.drift_seasonal, expected_to_move=spec.drift_expected_to_move,
                 entity=spec.entity.column)  # fmt: skip

    def measure(frame: pl.DataFrame, **declared) -> dict[str, dict]:
        rows = monitoring.drift(train, frame, spec.feature_columns, **(rules | declared))
        return {row["feature"]: row for row in rows.iter_rows(named=True)}

    season = measure(recent)
    assert not any(row["drifted"] for row in season.values()), season
    breaks = {
        "lag_1 x1000 (Wh as kWh)": ("lag_1", pl.col("lag_1") * 1000),
        "price x1000 (PLN/MWh)": ("price", pl.col("price") * 1000),
        "temperature_c stuck at 4.2": ("temperature_c", pl.lit(4.2)),
        "lag_1 stuck per meter": ("lag_1", pl.col("lag_1").first().over("customer_id")),
    }
    # 40 customers are too few to judge a PSI (each is one trajectory): the figures all the same.
    figures = {
        f"season change, {f}": round(psi(train[f].to_numpy(), recent[f].to_numpy()), 6)
        for f in ("temperature_c", "lag_1")
    }
    for label, (feature, change) in breaks.items():
        row = measure(recent.with_columns(change.alias(feature)))[feature]
        assert row["status"] == "feed break" and row["drifted"], (label, row)
        figures[label] = row["psi"]
    print("\nPSI on the generated sample:", *(f"{k}: {v}" for k, v in figures.items()), sep="\n  ")


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


def test_spring_with_accuracy_holding_starts_no_retraining(monitored):
    # The sensor itself (a failed check retrains once) is test_automation's; here the data: new
    # days of an unbroken feed in another season, and a champion as accurate as when evaluated.
    results = checks(monitored.second)
    live = results[("energy_forecast/live_accuracy", "accuracy_holds")]
    assert "mae at evaluation" in live.metadata and "relative change" in live.metadata
    assert live.passed and results[("energy_forecast/drift", "psi_below_threshold")].passed
    sensor = build_retrain_sensor(list(PIPELINES.values()), "train_models")
    with build_sensor_context(instance=monitored.platform.instance) as context:
        requests = sensor(context)
    assert isinstance(requests, SkipReason), requests


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
