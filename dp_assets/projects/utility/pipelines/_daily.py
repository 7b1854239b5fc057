"""What the sample utility's pipelines share: the customer entity, the daily consumption sandbox,
and stable codes of regions and tariffs (the platform knows none of them)."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from dp_assets.analysis.spec import Entity
from dp_projects.utility.views._schema import CUSTOMER_ID_PATTERN, DailyConsumption
from dp_projects.utility.model import REGIONS, TARIFFS

ENTITY = "customer_id"
CUSTOMER = Entity(ENTITY, CUSTOMER_ID_PATTERN, "Customer the example is about")
SEGMENTS = ("region", "tariff")
MIN_INTERVALS = 40  # a day with fewer half-hour readings says too little about the day's total

# Daily consumption for modelling: days with at least MIN_INTERVALS readings, scaled to 48, so a
# few missing readings neither drop the day nor bias it low.
DAILY_KWH = f"""
    SELECT * REPLACE (round(kwh * 48.0 / intervals, 6) AS kwh)
    FROM exploitation.daily_consumption WHERE intervals >= {MIN_INTERVALS}
"""


class DailySandbox(DailyConsumption):
    kwh: float = pa.Field(
        ge=0.0,
        description=f"Daily kWh scaled to 48 half-hours (days with at least {MIN_INTERVALS} readings)",
    )


def codes(column: str, values: tuple[str, ...]) -> pl.Expr:
    """A stable integer code per known value (numbers serve the same in training and in serving)."""
    return pl.col(column).replace_strict(
        {v: i for i, v in enumerate(values)}, default=None, return_dtype=pl.Int64
    )


def region_code() -> pl.Expr:
    return codes("region", REGIONS).alias("region_code")


def tariff_code() -> pl.Expr:
    return codes("tariff", TARIFFS).alias("tariff_code")
