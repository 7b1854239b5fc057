"""Pandera models of the utility's integrated tables, the ones its analysts and models read."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_projects.utility.sources.customers import SYSTEMS, CustomerAttributes
from dp_assets.sources.schema import UtcTimestamp
from dp_projects.utility.model import METER_ID_PATTERN, REGIONS, TARIFFS, Reading

CUSTOMER_ID_PATTERN = r"^CUS-[0-9A-F]{10}$"
VENDORS = ("vendor_a", "vendor_b")


class Customer(CustomerAttributes):
    """One row per real person, resolved across both CRM systems."""

    customer_id: str = pa.Field(
        str_matches=CUSTOMER_ID_PATTERN,
        unique=True,
        description="Platform customer id, stable across runs",
    )
    source_systems: str = pa.Field(
        description="CRM systems the person was found in, comma-separated"
    )
    source_records: int = pa.Field(ge=1, description="Number of CRM records merged into this row")

    class Config:
        strict = True
        unique = ["meter_id"]  # one person per meter: linking by meter guarantees it


class CustomerIdMap(pa.DataFrameModel):
    """Which CRM record belongs to which platform customer."""

    source_system: str = pa.Field(isin=SYSTEMS, description="CRM system")
    source_customer_id: str = pa.Field(description="Customer id in that CRM system")
    customer_id: str = pa.Field(str_matches=CUSTOMER_ID_PATTERN, description="Platform customer id")

    class Config:
        strict = True
        unique = ["source_system", "source_customer_id"]


class MeterReading(Reading):
    """Half-hourly readings of both vendors in kWh, one row per meter and interval."""

    vendor: str = pa.Field(isin=VENDORS, description="Vendor whose reading was kept")
    file_sha256: str = pa.Field(description="Landed file the kept reading came from")

    class Config:
        strict = True
        unique = ["meter_id", "reading_start"]


class ReadingGap(pa.DataFrameModel):
    """A run of missing half-hour intervals between two readings of the same meter."""

    meter_id: str = pa.Field(str_matches=METER_ID_PATTERN, description="Meter id")
    gap_start: UtcTimestamp = pa.Field(description="First missing interval start, UTC")
    gap_end: UtcTimestamp = pa.Field(
        description="Start of the next interval that has a reading, UTC"
    )
    missing_intervals: int = pa.Field(ge=1, description="Number of missing half-hour intervals")

    class Config:
        strict = True


class DailyConsumption(pa.DataFrameModel):
    """Consumption per customer and UTC day, with that day's weather and tariff price."""

    customer_id: str = pa.Field(str_matches=CUSTOMER_ID_PATTERN, description="Platform customer id")
    day: pl.Date = pa.Field(description="Calendar day, UTC")
    kwh: float = pa.Field(ge=0.0, description="Energy consumed that day, kWh (sum of the readings)")
    intervals: int = pa.Field(
        ge=1, le=48, description="Half-hour intervals with a reading (48 is complete)"
    )
    complete: bool = pa.Field(description="True when all 48 intervals have a reading")
    region: str = pa.Field(isin=REGIONS, description="Customer's service region")
    tariff: str = pa.Field(isin=TARIFFS, description="Customer's tariff")
    temperature_mean_c: Optional[float] = pa.Field(
        nullable=True, description="Mean air temperature in the region that day, Celsius"
    )
    temperature_min_c: Optional[float] = pa.Field(
        nullable=True, description="Lowest hourly temperature that day, Celsius"
    )
    temperature_max_c: Optional[float] = pa.Field(
        nullable=True, description="Highest hourly temperature that day, Celsius"
    )
    price_net_pln_per_kwh: Optional[float] = pa.Field(
        nullable=True, description="Tariff price that month, net of VAT, PLN per kWh"
    )
    cost_net_pln: Optional[float] = pa.Field(
        nullable=True, description="kwh times the net price, PLN"
    )

    class Config:
        strict = True
        unique = ["customer_id", "day"]
