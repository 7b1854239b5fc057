"""Weather: hourly observations per region, one JSON document (an API dump) per provider and day.

``{"provider": ..., "units": {"temperature": "C" | "F"}, "observations": [{"region", "time",
"temperature", "humidity"}]}``. One provider reports Fahrenheit; the unit is read from the document,
never assumed from the provider's name.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from dp_assets.sources.base import (
    FileContext,
    Parsed,
    PhysicalFormat,
    Source,
    Unparseable,
    add_reasons,
    load_json_document,
    parse_failures,
    records_from_objects,
)
from dp_assets.sources.schema import Lineage, UtcTimestamp
from dp_projects.utility.model import REGIONS

FIELDS = ["region", "time", "temperature", "humidity"]
TO_CELSIUS = {"C": lambda t: t, "F": lambda t: (t - 32.0) * 5.0 / 9.0}


class WeatherObservation(Lineage):
    provider: str = pa.Field(description="Weather data provider that reported the observation")
    region: str = pa.Field(isin=REGIONS, description="Service region the observation stands for")
    observed_at: UtcTimestamp = pa.Field(description="Time of the hourly observation, UTC")
    temperature_c: float = pa.Field(
        ge=-50.0, le=50.0, description="Air temperature, degrees Celsius"
    )
    humidity_pct: float = pa.Field(
        ge=0.0, le=100.0, nullable=True, description="Relative humidity, percent"
    )


def parse(text: str) -> Parsed:
    document = load_json_document(text)
    if not isinstance(document, dict) or not isinstance(document.get("observations"), list):
        raise Unparseable("expected a JSON object with an 'observations' array")
    unit = (document.get("units") or {}).get("temperature")
    if unit not in TO_CELSIUS:
        raise Unparseable(
            f"unknown temperature unit {unit!r}; expected one of {sorted(TO_CELSIUS)}"
        )
    parsed = records_from_objects(document["observations"], FIELDS)
    records = parsed.records.with_columns(
        provider=pl.lit(str(document.get("provider", "unknown"))), unit=pl.lit(unit)
    )
    return Parsed(records, parsed.notes)


def homogenize(raw: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    unit = raw["unit"][0]
    frame = raw.with_columns(
        region_clean=pl.col("region").str.strip_chars().str.to_lowercase(),
        observed_at=pl.col("time").str.to_datetime(time_unit="us", time_zone="UTC", strict=False),
        temperature_c=TO_CELSIUS[unit](pl.col("temperature").cast(pl.Float64, strict=False)),
        humidity_pct=pl.col("humidity").cast(pl.Float64, strict=False),
    )
    return frame.with_columns(
        add_reasons(
            parse_failures(
                {"observed_at": "time", "temperature_c": "temperature", "humidity_pct": "humidity"}
            )
        )
    ).select(
        pl.lit(ctx.sha256).alias("file_sha256"),
        "record_no",
        "provider",
        pl.col("region_clean").alias("region"),
        "observed_at",
        "temperature_c",
        "humidity_pct",
        "raw_record",
        "reject_reason",
    )


SOURCE = Source(
    name="weather",
    description="Hourly weather observations per service region from two providers (JSON)",
    physical=PhysicalFormat(
        format="json",
        units="temperature in C or F as declared in the document; humidity in percent",
        time_zone="UTC (ISO 8601)",
        notes="one document per provider and day",
    ),
    schema=WeatherObservation,
    key=("region", "observed_at"),
    parse=parse,
    homogenize=homogenize,
    version="1",
)
