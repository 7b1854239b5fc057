"""Canonical columns shared by several formatted tables: file lineage and meter readings."""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

METER_ID_PATTERN = r"^MTR-\d{6}$"
# A household meter cannot draw more than about 40 kW for half an hour; more is a device fault.
MAX_KWH_PER_HALF_HOUR = 20.0

UtcTimestamp = Annotated[pl.Datetime, "us", "UTC"]


class Lineage(pa.DataFrameModel):
    """Where each row came from: enough to find the raw record in the persistent landing."""

    file_sha256: str = pa.Field(
        str_length={"min_value": 64, "max_value": 64},
        description="SHA-256 of the landed raw file this row was read from",
    )
    record_no: int = pa.Field(
        ge=0,
        description="Position of the record in its raw file: the line number for CSV and JSON "
        "Lines (header is line 1), the array index for JSON documents",
    )

    class Config:
        strict = True
        coerce = False


class Reading(pa.DataFrameModel):
    """One half-hourly reading in the canonical model: UTC interval start, energy in kWh."""

    meter_id: str = pa.Field(str_matches=METER_ID_PATTERN, description="Meter id, MTR-nnnnnn")
    reading_start: UtcTimestamp = pa.Field(
        description="Start of the half-hour interval the reading covers, UTC"
    )
    kwh: float = pa.Field(
        ge=0.0,
        le=MAX_KWH_PER_HALF_HOUR,
        description=f"Energy consumed in the interval, kWh (0 to {MAX_KWH_PER_HALF_HOUR:g})",
    )


class MeterReading(Reading, Lineage):
    """A formatted reading: the canonical columns plus where the row came from."""


def canonical_meter_id(col: str) -> pl.Expr:
    """'MTR-000123', 'mtr-123', '123' and '000123' all mean meter MTR-000123; other text stays null."""
    digits = pl.col(col).str.strip_chars().str.to_uppercase().str.extract(r"^(?:MTR-?)?(\d{1,6})$")
    return pl.concat_str(pl.lit("MTR-"), digits.str.zfill(6))


REGIONS = ("north", "south", "east", "west", "central")
TARIFFS = ("G11", "G12", "G12W")
