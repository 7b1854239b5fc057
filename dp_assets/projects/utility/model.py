"""The sample utility's shared model: meter ids, regions, tariffs and the canonical reading, used by
its sources, views and pipelines (the platform knows none of them)."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from dp_assets.sources.schema import Lineage, UtcTimestamp

METER_ID_PATTERN = r"^MTR-\d{6}$"
# A household meter cannot draw more than about 40 kW for half an hour; more is a device fault.
MAX_KWH_PER_HALF_HOUR = 20.0


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


def canonical_meter_id(col: str | pl.Expr) -> pl.Expr:
    """'MTR-000123', 'mtr-123', '123' and '000123' all mean meter MTR-000123; other text stays null.
    A column name or an expression (the meter sources' declarations name it as their hook)."""
    value = pl.col(col) if isinstance(col, str) else col
    digits = value.str.strip_chars().str.to_uppercase().str.extract(r"^(?:MTR-?)?(\d{1,6})$")
    return pl.concat_str(pl.lit("MTR-"), digits.str.zfill(6))


REGIONS = ("north", "south", "east", "west", "central")
TARIFFS = ("G11", "G12", "G12W")
