"""Building examples without leakage, and splitting them: by time, by a seeded holdout, by file."""

from __future__ import annotations

import fnmatch
import hashlib

import polars as pl


def complete_days(
    frame: pl.DataFrame,
    entity: str,
    time: str,
    carried: list[str] = (),
    constant: list[str] = (),
) -> pl.DataFrame:
    """One row per entity and calendar day from their first day in ``frame`` to its last day
    (the same for everyone, so every entity still present can be scored on the latest day).

    Missing days get null measurements, so shifting by rows is shifting by days. ``constant``
    columns are the same on every row of an entity; ``carried`` ones are carried forward from the
    last known day (never backward: that would copy the future into the past).
    """
    spans = (
        frame.group_by(entity)
        .agg(pl.col(time).min().alias("_first"))
        .sort(entity)
        .with_columns(_last=frame[time].max())
    )
    # The grid is built in (entity, day) order and the joins keep it: no sort of the result.
    grid = spans.select(entity, pl.date_ranges("_first", "_last", "1d").alias(time)).explode(time)
    grid = grid.join(frame.drop(constant), on=[entity, time], how="left", maintain_order="left")
    if constant:
        constants = frame.group_by(entity).agg(pl.col(c).first() for c in constant)
        grid = grid.join(constants, on=entity, how="left", maintain_order="left")
    return grid.with_columns(pl.col(c).forward_fill().over(entity) for c in carried)


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
            f"training window need more: land more history"
        )
    return examples.with_columns(split=split).filter(pl.col("split").is_not_null())


def split_holdout(
    examples: pl.DataFrame, entity: str, fraction: float, seed: int, stratified: bool
) -> pl.DataFrame:
    """Assign ``split``: a share ``fraction`` of the labelled rows validates (of each label value
    when ``stratified``), the rest trains, unlabelled rows are scored. Which rows validate depends
    on the seed and the entity ids only, not on the row order nor the polars version: they are
    ranked by a blake2b digest of ``"{seed}:{id}"`` (``Expr.hash`` may change between releases)."""
    labelled = pl.col("label").is_not_null()
    group = [pl.col("label")] if stratified else [labelled]
    digest = (
        pl.col(entity)
        .cast(pl.String)
        .map_elements(
            lambda value: hashlib.blake2b(f"{seed}:{value}".encode(), digest_size=8).digest(),
            return_dtype=pl.Binary,
        )
    )
    order = digest.rank("ordinal").over(group)
    count = pl.len().over(group)
    chosen = order <= (count * fraction).round()
    split = (
        pl.when(~labelled).then(pl.lit("score"))
        .when(chosen).then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
    )  # fmt: skip
    return examples.with_columns(split=split)


def split_by_file(
    examples: pl.DataFrame,
    entity: str,
    sandbox: pl.DataFrame,
    deliveries: pl.DataFrame,
    pattern: str,
) -> pl.DataFrame:
    """Assign ``split``: examples of entities read from a landed file whose original name matches
    the glob ``pattern`` validate, the other labelled ones train, unlabelled ones are scored.

    ``deliveries`` holds the landing manifest's (sha256, original_name)."""
    names = deliveries.filter(
        pl.col("original_name").map_elements(
            lambda name: (
                fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name.rsplit("/")[-1], pattern)
            ),
            pl.Boolean,
        )
    )
    files = names["sha256"].unique().implode()
    validating = sandbox.filter(pl.col("file_sha256").is_in(files))[entity].unique().implode()
    split = (
        pl.when(pl.col("label").is_null()).then(pl.lit("score"))
        .when(pl.col(entity).is_in(validating)).then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
    )  # fmt: skip
    return examples.with_columns(split=split)
