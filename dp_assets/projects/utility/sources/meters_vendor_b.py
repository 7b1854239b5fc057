"""Vendor B: half-hourly meter readings, one JSON Lines file per day.

Each line is ``{"meter": "000123", "ts": <epoch ms UTC>, "wh": 250}``. The vendor renamed ``wh`` to
``energy_wh`` partway through the history (schema drift); both names are read as the same field.
"""

from __future__ import annotations

import polars as pl

from dp_assets.sources.base import (
    FileContext,
    Parsed,
    PhysicalFormat,
    Source,
    parse_failures,
    add_reasons,
    read_json_lines,
)
from dp_projects.utility.model import MeterReading, canonical_meter_id

FIELDS = ["meter", "ts", "wh"]
RENAMED_FIELDS = {"energy_wh": "wh"}  # schema drift: the newer name -> the name we read


def parse(text: str) -> Parsed:
    return read_json_lines(text, FIELDS, RENAMED_FIELDS)


def homogenize(raw: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    frame = raw.with_columns(
        meter_id=canonical_meter_id("meter"),
        epoch_ms=pl.col("ts").cast(pl.Int64, strict=False),
        # Times 0.001, not divided by 1000: polars divides a frame of one row exactly and a longer
        # one by the reciprocal, so a file's values would depend on how it is cut into parts.
        kwh=pl.col("wh").cast(pl.Float64, strict=False) * 0.001,
    ).with_columns(
        reading_start=pl.from_epoch("epoch_ms", time_unit="ms")
        .dt.cast_time_unit("us")
        .dt.replace_time_zone("UTC")
    )
    return frame.with_columns(
        add_reasons(parse_failures({"meter_id": "meter", "epoch_ms": "ts", "kwh": "wh"}))
    ).select(
        pl.lit(ctx.sha256).alias("file_sha256"),
        "record_no",
        "meter_id",
        "reading_start",
        "kwh",
        "raw_record",
        "reject_reason",
    )


SOURCE = Source(
    name="meters_vendor_b",
    description="Half-hourly smart-meter readings from vendor B (JSON Lines, epoch ms UTC, Wh)",
    physical=PhysicalFormat(
        format="jsonl",
        units="Wh per half hour",
        time_zone="UTC (epoch milliseconds)",
        notes="one file per day; field 'wh' renamed to 'energy_wh' partway through the history",
    ),
    schema=MeterReading,
    key=("meter_id", "reading_start"),
    parse=parse,
    homogenize=homogenize,
    version="1",
    subject_keys=(("meter_id",),),  # a household's consumption is personal data
)
