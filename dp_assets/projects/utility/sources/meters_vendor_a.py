"""Vendor A: half-hourly meter readings, one CSV file per day.

``meter_id;timestamp;consumption_kwh`` with ``;`` delimiter, decimal comma and the local wall-clock
time of Europe/Warsaw. On the autumn DST change the hour 02:00-03:00 occurs twice and the vendor
writes it twice, in time order: the first occurrence is summer time (CEST), the second winter time.
A timestamp inside the skipped spring hour does not exist and is rejected.
"""

from __future__ import annotations

import polars as pl

from dp_assets.sources.base import (
    FileContext,
    Parsed,
    PhysicalFormat,
    Source,
    add_reasons,
    decimal_comma,
    occurrences,
    parse_failures,
    read_delimited,
)
from dp_projects.utility.model import MeterReading, canonical_meter_id

TIME_ZONE = "Europe/Warsaw"
COLUMNS = ["meter_id", "timestamp", "consumption_kwh"]


def parse(text: str) -> Parsed:
    return read_delimited(text, ";", COLUMNS)


def homogenize(raw: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    local = (
        pl.col("timestamp")
        .str.strip_chars()
        .str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M", strict=False)
    )
    frame = occurrences(
        raw.with_columns(
            meter=canonical_meter_id("meter_id"), local=local, kwh=decimal_comma("consumption_kwh")
        ),
        "local",
        ["meter"],
        ctx.carry,
    )
    # The repeated autumn hour: first occurrence per meter is the earlier (summer-time) instant.
    ambiguous = (
        pl.when(pl.col("occurrence") <= 1).then(pl.lit("earliest")).otherwise(pl.lit("latest"))
    )
    frame = frame.with_columns(
        reading_start=pl.col("local")
        .dt.replace_time_zone(TIME_ZONE, ambiguous=ambiguous, non_existent="null")
        .dt.convert_time_zone("UTC")
    )
    return frame.with_columns(
        add_reasons(
            parse_failures({"meter": "meter_id", "local": "timestamp", "kwh": "consumption_kwh"}),
            pl.when(pl.col("local").is_not_null() & pl.col("reading_start").is_null()).then(
                pl.format(
                    "timestamp: '{}' does not exist in {} (DST gap)",
                    pl.col("timestamp"),
                    pl.lit(TIME_ZONE),
                )
            ),
            pl.when(pl.col("occurrence") > 2).then(
                pl.format(
                    "timestamp: '{}' occurs more than twice for this meter", pl.col("timestamp")
                )
            ),
        )
    ).select(
        pl.lit(ctx.sha256).alias("file_sha256"),
        "record_no",
        pl.col("meter").alias("meter_id"),
        "reading_start",
        "kwh",
        "raw_record",
        "reject_reason",
    )


SOURCE = Source(
    name="meters_vendor_a",
    description="Half-hourly smart-meter readings from vendor A (CSV, local time, kWh)",
    physical=PhysicalFormat(
        format="csv",
        delimiter=";",
        decimal=",",
        units="kWh per half hour",
        time_zone=TIME_ZONE,
        notes="one file per day; the repeated autumn DST hour is written twice in time order",
    ),
    schema=MeterReading,
    key=("meter_id", "reading_start"),
    parse=parse,
    homogenize=homogenize,
    version="1",
    subject_keys=(("meter_id",),),  # a household's consumption is personal data
)
