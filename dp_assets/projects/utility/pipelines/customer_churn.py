"""customer_churn: will the customer's contract end within the next 30 days (classification)?

Features describe the customer at the end of the as-of day: consumption level and trend, tenure,
tariff and its price movement. The contract end date is used for the label only.
"""

from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_assets.analysis.spec import Gate, PipelineSpec
from dp_assets.analysis.timeseries import complete_days

from ._daily import CUSTOMER, DAILY_KWH, ENTITY, SEGMENTS, DailySandbox, region_code, tariff_code

HORIZON_DAYS = 30
kwh = pl.col("kwh")


class Sandbox(DailySandbox):
    contract_start: pl.Date = pa.Field(description="First day of the customer's supply contract")
    contract_end: Optional[pl.Date] = pa.Field(
        nullable=True, description="Last day of the contract; null while it runs"
    )


class Features(pa.DataFrameModel):
    # Relative to the other customers on the same day: consumption and prices move with the season
    # for everyone, so absolute levels or trends would act as a clock, not as a churn signal.
    level_vs_peers: float = pa.Field(
        nullable=True, description="Mean daily kWh over 28 days / the median customer's that day"
    )
    trend_7_28_vs_peers: float = pa.Field(
        nullable=True, description="(7-day / 28-day mean kWh) / the median customer's that day"
    )
    trend_7_prev_vs_peers: float = pa.Field(
        nullable=True,
        description="(7-day mean / the 7 days before) / the median customer's that day",
    )
    days_without_data_7: int = pa.Field(
        ge=0, le=7, description="Days of the last 7 without enough readings"
    )
    tenure_days: int = pa.Field(description="Days since the contract started")
    price_change_30d: float = pa.Field(
        nullable=True, description="Net tariff price now / 30 days earlier"
    )
    region_code: int = pa.Field(nullable=True, description="Region as a stable integer code")
    tariff_code: int = pa.Field(nullable=True, description="Tariff as a stable integer code")


def vs_peers(column: str) -> pl.Expr:
    return pl.col(column) / pl.col(column).median().over("as_of")


def build_examples(sandbox: pl.DataFrame) -> pl.DataFrame:
    days = complete_days(
        sandbox,
        ENTITY,
        "day",
        constant=["contract_start", "contract_end"],
        carried=["region", "tariff", "price_net_pln_per_kwh"],
    )
    by, last_day = ENTITY, sandbox["day"].max()
    mean_7 = kwh.rolling_mean(7, min_samples=4).over(by)
    ends_soon = pl.col("contract_end").is_not_null() & (
        pl.col("contract_end") <= pl.col("day") + pl.duration(days=HORIZON_DAYS)
    )
    price = pl.col("price_net_pln_per_kwh")
    return (
        days.with_columns(
            as_of=pl.col("day"),
            mean_7=mean_7,
            mean_28=kwh.rolling_mean(28, min_samples=14).over(by),
            prev_7=mean_7.shift(7).over(by),
            days_without_data_7=kwh.is_null().cast(pl.Int64).rolling_sum(7, min_samples=1).over(by),
            tenure_days=(pl.col("day") - pl.col("contract_start")).dt.total_days(),
            price_change_30d=price / price.shift(30).over(by),
            # Known only once the horizon has passed within the data: later days are scored, not learned.
            label=pl.when(pl.col("day") + pl.duration(days=HORIZON_DAYS) <= last_day).then(
                ends_soon.cast(pl.Float64)
            ),
        )
        .filter(
            pl.col("mean_28").is_not_null()
            & (
                pl.col("contract_end").is_null() | (pl.col("contract_end") > pl.col("day"))
            )  # still a customer
        )
        .with_columns(
            trend_7_28=pl.col("mean_7") / pl.col("mean_28"),
            trend_7_prev=pl.col("mean_7") / pl.col("prev_7"),
        )
        .with_columns(
            level_vs_peers=vs_peers("mean_28"),
            trend_7_28_vs_peers=vs_peers("trend_7_28"),
            trend_7_prev_vs_peers=vs_peers("trend_7_prev"),
            region_code=region_code(),
            tariff_code=tariff_code(),
        )
    )


SPEC = PipelineSpec(
    name="customer_churn",
    description=f"Probability that a customer's contract ends within {HORIZON_DAYS} days",
    task="classification",
    sandbox_query=f"""SELECT d.*, c.contract_start, c.contract_end FROM ({DAILY_KWH}) d
                      JOIN exploitation.customers c USING (customer_id) ORDER BY customer_id, day""",
    sandbox_deps=(("exploitation", "daily_consumption"), ("exploitation", "customers")),
    entity=CUSTOMER,
    time="day",
    segments=SEGMENTS,
    source_file=__file__,
    sandbox_schema=Sandbox,
    build_examples=build_examples,
    horizon_days=HORIZON_DAYS,
    features_schema=Features,
    baseline=lambda train, frame: pl.repeat(
        train["label"].mean(), frame.height, eager=True
    ).to_numpy(),  # base rate
    gate=Gate(min_improvement_vs_baseline=0.2, min_improvement_vs_champion=0.0),
    lgbm_params={
        "objective": "binary",
        "learning_rate": 0.03,
        "num_leaves": 7,
        "min_data_in_leaf": 200,
        "lambda_l2": 50.0,
        "min_sum_hessian_in_leaf": 10.0,
    },  # fmt: skip
    num_boost_round=200,
    # Relative to peers, the trends keep a median of 1 all year, but their spread follows the
    # heating season (0.04 in winter, 0.06 in spring on the sample: electric heating stops at
    # different times): compared with the same weeks of an earlier year once the data holds one.
    drift_seasonal=("trend_7_28_vs_peers", "trend_7_prev_vs_peers"),
    # Domain knowledge as constraints: longer tenure and rising consumption never raise churn risk.
    monotone={"tenure_days": -1, "trend_7_28_vs_peers": -1, "trend_7_prev_vs_peers": -1},
    lineage={
        **dict.fromkeys(
            (
                "level_vs_peers",
                "trend_7_28_vs_peers",
                "trend_7_prev_vs_peers",
                "days_without_data_7",
            ),
            ("kwh",),
        ),
        "tenure_days": ("contract_start", "day"),
        "price_change_30d": ("price_net_pln_per_kwh",),
        "region_code": ("region",),
        "tariff_code": ("tariff",),
        "label": ("contract_end", "day"),
    },
)
