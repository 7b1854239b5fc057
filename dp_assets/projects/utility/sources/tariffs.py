"""Tariffs: monthly energy prices per tariff, one CSV file per month.

``tariff,month,price_pln_per_kwh``. A semantic change the files do not announce: prices include VAT
before ``VAT_EXCLUDED_FROM`` and exclude it from then on. The canonical model is net of VAT.
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from dp_assets.sources.base import (
    FileContext,
    Parsed,
    PhysicalFormat,
    Source,
    add_reasons,
    parse_failures,
    read_delimited,
)
from dp_assets.sources.schema import Lineage
from dp_projects.utility.model import TARIFFS

COLUMNS = ["tariff", "month", "price_pln_per_kwh"]
VAT_RATE = 0.23
VAT_EXCLUDED_FROM = dt.date(2024, 4, 1)  # the provider's price lists switched to net prices here


class Tariff(Lineage):
    tariff: str = pa.Field(isin=TARIFFS, description="Tariff code")
    month: pl.Date = pa.Field(description="First day of the month the price applies to")
    price_net_pln_per_kwh: float = pa.Field(
        gt=0.0, le=5.0, description="Energy price net of VAT, PLN per kWh"
    )
    source_included_vat: bool = pa.Field(
        description=f"Whether the raw price included VAT ({VAT_RATE:.0%}) and was converted to net"
    )


def parse(text: str) -> Parsed:
    return read_delimited(text, ",", COLUMNS)


def homogenize(raw: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    frame = raw.with_columns(
        tariff_clean=pl.col("tariff").str.strip_chars().str.to_uppercase(),
        month_start=pl.concat_str(pl.col("month").str.strip_chars(), pl.lit("-01")).str.to_date(
            "%Y-%m-%d", strict=False
        ),
        price=pl.col("price_pln_per_kwh").cast(pl.Float64, strict=False),
    ).with_columns(source_included_vat=pl.col("month_start") < VAT_EXCLUDED_FROM)
    return frame.with_columns(
        add_reasons(parse_failures({"month_start": "month", "price": "price_pln_per_kwh"}))
    ).select(
        pl.lit(ctx.sha256).alias("file_sha256"),
        "record_no",
        pl.col("tariff_clean").alias("tariff"),
        pl.col("month_start").alias("month"),
        pl.when(pl.col("source_included_vat"))
        .then(pl.col("price") / (1 + VAT_RATE))
        .otherwise(pl.col("price"))
        .round(6)
        .alias("price_net_pln_per_kwh"),
        "source_included_vat",
        "raw_record",
        "reject_reason",
    )


SOURCE = Source(
    name="tariffs",
    description="Monthly energy prices per tariff (CSV); gross of VAT before April 2024, net after",
    physical=PhysicalFormat(
        format="csv",
        delimiter=",",
        units="PLN per kWh",
        notes=f"prices include {VAT_RATE:.0%} VAT before {VAT_EXCLUDED_FROM}, exclude it after",
    ),
    schema=Tariff,
    key=("tariff", "month"),
    parse=parse,
    homogenize=homogenize,
    version="1",
)
