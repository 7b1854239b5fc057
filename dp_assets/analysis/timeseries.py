"""Helpers the pipeline specs share to build examples from daily series without leakage."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from dp_assets.exploitation.schema import DailyConsumption
from dp_projects.utility.model import REGIONS, TARIFFS

ENTITY = "customer_id"
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


def complete_days(frame: pl.DataFrame, constant: list[str], carried: list[str]) -> pl.DataFrame:
    """One row per customer and calendar day from their first day in ``frame`` to its last day
    (the same for everyone, so every customer still active can be scored on the latest day).

    Missing days get null measurements, so shifting by rows is shifting by days. ``constant``
    columns are the same on every row of a customer; ``carried`` ones are carried forward from the
    last known day (never backward: that would copy the future into the past).
    """
    spans = (
        frame.group_by(ENTITY)
        .agg(pl.col("day").min().alias("first"))
        .sort(ENTITY)
        .with_columns(last=frame["day"].max())
    )
    # The grid is built in (customer, day) order and the joins keep it: no sort of the result.
    grid = spans.select(ENTITY, pl.date_ranges("first", "last", "1d").alias("day")).explode("day")
    constants = (
        frame.group_by(ENTITY).agg(pl.col(c).first() for c in constant) if constant else None
    )
    measured = frame.drop(constant)
    grid = grid.join(measured, on=[ENTITY, "day"], how="left", maintain_order="left")
    if constants is not None:
        grid = grid.join(constants, on=ENTITY, how="left", maintain_order="left")
    return grid.with_columns(pl.col(c).forward_fill().over(ENTITY) for c in carried)


def codes(column: str, values: tuple[str, ...]) -> pl.Expr:
    """A stable integer code per known value (numbers serve the same in training and in serving)."""
    return pl.col(column).replace_strict(
        {v: i for i, v in enumerate(values)}, default=None, return_dtype=pl.Int64
    )


def region_code() -> pl.Expr:
    return codes("region", REGIONS).alias("region_code")


def tariff_code() -> pl.Expr:
    return codes("tariff", TARIFFS).alias("tariff_code")


class NotEnoughHistory(ValueError):
    """The data is too short to train and validate without leakage."""


def split_by_time(examples: pl.DataFrame, validation_days: int, horizon_days: int) -> pl.DataFrame:
    """Assign ``split``: the latest day is scored; the most recent labelled days validate; the past
    trains. Training stops ``horizon_days`` before the validation window, so no training label
    looks into it. Examples that are neither are dropped."""
    labelled = examples.filter(pl.col("label").is_not_null())["as_of"].unique().sort()
    latest = examples["as_of"].max()
    validation_start = labelled[-validation_days] if len(labelled) >= validation_days else None
    split = (
        pl.when(pl.col("label").is_null() & (pl.col("as_of") == latest)).then(pl.lit("score"))
        .when(pl.col("label").is_null()).then(None)
        .when(pl.col("as_of") >= validation_start).then(pl.lit("validation"))
        .when(pl.col("as_of") <= pl.lit(validation_start) - pl.duration(days=horizon_days)).then(pl.lit("train"))
    )  # fmt: skip
    if (
        validation_start is None
        or examples.filter(
            pl.col("as_of") <= pl.lit(validation_start) - pl.duration(days=horizon_days)
        ).is_empty()
    ):
        raise NotEnoughHistory(
            f"{len(labelled)} labelled as-of days (days whose {horizon_days}-day label horizon lies within "
            f"the data), but the {validation_days}-day validation window, a {horizon_days}-day gap and a "
            f"training window need more: land more history (e.g. dp sample-data --days 120)"
        )
    return examples.with_columns(split=split).filter(pl.col("split").is_not_null())
