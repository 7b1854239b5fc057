"""energy_forecast: tomorrow's consumption per customer (regression).

Everything a feature uses is known at the end of the as-of day: consumption lags and rolling means,
the calendar of the target day, the weather and tariff price of the as-of day.
"""

import pandera.polars as pa
import polars as pl

from dp_assets.analysis.spec import Gate, PipelineSpec
from dp_assets.analysis.timeseries import complete_days

from ._daily import CUSTOMER, DAILY_KWH, ENTITY, SEGMENTS, DailySandbox, region_code, tariff_code

kwh = pl.col("kwh")


class Features(pa.DataFrameModel):
    lag_1: float = pa.Field(nullable=True, description="kWh on the as-of day")
    lag_2: float = pa.Field(nullable=True, description="kWh the day before the as-of day")
    lag_7: float = pa.Field(
        nullable=True, description="kWh on the target's weekday one week earlier"
    )
    mean_7: float = pa.Field(
        nullable=True, description="Mean daily kWh over the 7 days up to the as-of day"
    )
    mean_28: float = pa.Field(
        nullable=True, description="Mean daily kWh over the 28 days up to the as-of day"
    )
    temperature_c: float = pa.Field(
        nullable=True, description="Mean temperature on the as-of day, Celsius"
    )
    temperature_3d_c: float = pa.Field(
        nullable=True, description="Mean temperature over the 3 days up to the as-of day"
    )
    target_weekday: int = pa.Field(
        ge=1, le=7, description="ISO weekday of the target day (as-of day + 1)"
    )
    price: float = pa.Field(nullable=True, description="Net tariff price on the as-of day, PLN/kWh")
    region_code: int = pa.Field(nullable=True, description="Region as a stable integer code")
    tariff_code: int = pa.Field(nullable=True, description="Tariff as a stable integer code")


def build_examples(sandbox: pl.DataFrame) -> pl.DataFrame:
    days = complete_days(
        sandbox, ENTITY, "day", constant=[], carried=["region", "tariff", "price_net_pln_per_kwh"]
    )
    by = ENTITY
    return (
        days.with_columns(
            as_of=pl.col("day"),
            lag_1=kwh,
            lag_2=kwh.shift(1).over(by),
            lag_7=kwh.shift(6).over(by),
            mean_7=kwh.rolling_mean(7, min_samples=5).over(by),
            mean_28=kwh.rolling_mean(28, min_samples=20).over(by),
            temperature_c=pl.col("temperature_mean_c"),
            temperature_3d_c=pl.col("temperature_mean_c").rolling_mean(3, min_samples=1).over(by),
            target_weekday=(pl.col("day") + pl.duration(days=1)).dt.weekday().cast(pl.Int64),
            price=pl.col("price_net_pln_per_kwh"),
            label=kwh.shift(-1).over(by),
        )
        .with_columns(region_code(), tariff_code())
        .filter(pl.col("mean_28").is_not_null() & pl.col("lag_7").is_not_null())
    )


SPEC = PipelineSpec(
    name="energy_forecast",
    description="Next-day consumption per customer (kWh), from lags, rolling means, calendar, weather, tariff",
    task="regression",
    sandbox_query=f"{DAILY_KWH} ORDER BY customer_id, day",
    sandbox_deps=(("exploitation", "daily_consumption"),),
    entity=CUSTOMER,
    time="day",
    segments=SEGMENTS,
    source_file=__file__,
    sandbox_schema=DailySandbox,
    build_examples=build_examples,
    horizon_days=1,
    features_schema=Features,
    baseline=lambda train, frame: (
        frame["lag_7"].fill_null(frame["mean_7"]).to_numpy()
    ),  # seasonal naive
    gate=Gate(min_improvement_vs_baseline=0.15, min_improvement_vs_champion=0.0),
    lgbm_params={
        "objective": "regression_l1",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 40,
    },
    num_boost_round=400,
    # Consumption follows the temperature (heating): both move with the season, compared with the
    # same weeks of an earlier year once the data holds one. Tariff prices are revised monthly.
    drift_seasonal=(
        "lag_1",
        "lag_2",
        "lag_7",
        "mean_7",
        "mean_28",
        "temperature_c",
        "temperature_3d_c",
    ),  # fmt: skip
    drift_expected_to_move=("price",),
    lineage={
        **dict.fromkeys(("lag_1", "lag_2", "lag_7", "mean_7", "mean_28", "label"), ("kwh",)),
        "temperature_c": ("temperature_mean_c",),
        "temperature_3d_c": ("temperature_mean_c",),
        "target_weekday": ("day",),
        "price": ("price_net_pln_per_kwh",),
        "region_code": ("region",),
        "tariff_code": ("tariff",),
    },
)
