"""The utility's integrated tables and their SQL, composed from the platform's building blocks
(``dp_assets.exploitation.blocks``): the views beside this module wire them as assets."""

from __future__ import annotations

import datetime as dt

from dp_assets.automation import daily_freshness
from dp_assets.exploitation import blocks
from dp_assets.exploitation.blocks import Series, exact, latest
from dp_assets.exploitation.incremental import Table
from dp_projects.utility.views._entity_resolution import ATTRIBUTES
from dp_projects.utility.views._schema import (
    Customer,
    CustomerIdMap,
    DailyConsumption,
    MeterReading,
    ReadingGap,
)

VENDOR_SOURCES = ("meters_vendor_a", "meters_vendor_b")
FRESH = (("freshness_policy", daily_freshness()),)  # the tables its daily work relies on

CRM = "formatted/customers"
CRM_ID = (f"{CRM}.source_system", f"{CRM}.source_customer_id")
VENDORS = tuple(f"formatted/{s}" for s in VENDOR_SOURCES)
READ = "exploitation/meter_readings"
CUSTOMERS = Table(
    "customers",
    Customer,
    "One row per real person, resolved across both CRM systems",
    {
        "customer_id": CRM_ID,
        "source_systems": (f"{CRM}.source_system",),
        "source_records": CRM_ID,
        **{c: (f"{CRM}.{c}",) for c in ATTRIBUTES},
    },
    attributes=FRESH,
)
ID_MAP = Table(
    "customer_id_map",
    CustomerIdMap,
    "CRM record to platform customer id",
    {"customer_id": CRM_ID, "source_system": CRM_ID[:1], "source_customer_id": CRM_ID[1:]},
)
READINGS = Table(
    "meter_readings",
    MeterReading,
    "Half-hourly readings of both vendors in kWh, deduplicated",
    {
        c: tuple(f"{v}.{c}" for v in VENDORS)
        for c in ("meter_id", "reading_start", "kwh", "file_sha256")
    },
    attributes=FRESH,
)
GAPS = Table(
    "reading_gaps",
    ReadingGap,
    "Runs of missing half-hour intervals per meter",
    {"meter_id": (f"{READ}.meter_id",)}
    | dict.fromkeys(("gap_start", "gap_end", "missing_intervals"), (f"{READ}.reading_start",)),
)
DAILY = Table(
    "daily_consumption",
    DailyConsumption,
    "Consumption per customer and day with weather and tariff price",
    {
        "customer_id": ("exploitation/customers.customer_id",),
        "day": (f"{READ}.reading_start",),
        "kwh": (f"{READ}.kwh",),
        "intervals": (f"{READ}.reading_start",),
        "complete": (f"{READ}.reading_start",),
        "region": ("exploitation/customers.region",),
        "tariff": ("exploitation/customers.tariff",),
        **{
            f"temperature_{s}_c": ("formatted/weather.temperature_c",)
            for s in ("mean", "min", "max")
        },
        "price_net_pln_per_kwh": ("formatted/tariffs.price_net_pln_per_kwh",),
        "cost_net_pln": (f"{READ}.kwh", "formatted/tariffs.price_net_pln_per_kwh"),
    },
    attributes=FRESH,
)

# Both vendors' readings, one per meter and interval: the most recently arrived file wins (a
# correction), then vendor A; the vendor column says whose reading was kept.
SERIES = Series(
    READINGS.table,
    VENDOR_SOURCES,
    entity="meter_id",
    time="reading_start",
    interval=dt.timedelta(minutes=30),
    values=("kwh",),
    label="vendor",
    labels=tuple(s.removeprefix("meters_") for s in VENDOR_SOURCES),
)

CRM_RECORDS = latest(
    "formatted.customers",
    "customers",
    "t.source_system, t.source_customer_id",
    "t.*, d.arrival_time AS exported_at",
)


def meter_readings(only: str | None = None) -> str:
    """The readings as a full rebuild gives them (``only``: limited to its (meter_id, day)s)."""
    return blocks.across_sources(SERIES, only)


READING_GAPS = blocks.gaps(SERIES)


def daily_consumption(days: str | None = None) -> str:
    """Consumption per customer and UTC day with the day's weather and the month's price.
    ``days``: a table of days to limit the result to, for an incremental update (``$since``)."""
    return f"""
    WITH daily AS ({blocks.daily_totals(SERIES, days)}),
    weather AS (
        SELECT region, CAST(observed_at AS DATE) AS day,
               avg({exact("temperature_c")}) AS mean_c, min(temperature_c) AS min_c, max(temperature_c) AS max_c
        FROM ({latest("formatted.weather", "weather", "t.region, t.observed_at")}) GROUP BY ALL
    ),
    prices AS ({latest("formatted.tariffs", "tariffs", "t.tariff, t.month")})
    SELECT c.customer_id, d.day, round(d.kwh, 6) AS kwh, d.intervals,
           d.intervals = {SERIES.per_day} AS complete, c.region, c.tariff,
           round(w.mean_c, 3) AS temperature_mean_c, round(w.min_c, 3) AS temperature_min_c,
           round(w.max_c, 3) AS temperature_max_c,
           p.price_net_pln_per_kwh, round(d.kwh * p.price_net_pln_per_kwh, 6) AS cost_net_pln
    FROM daily d
    JOIN exploitation.customers c USING (meter_id)
    LEFT JOIN weather w ON w.region = c.region AND w.day = d.day
    LEFT JOIN prices p ON p.tariff = c.tariff AND p.month = date_trunc('month', d.day)
    ORDER BY c.customer_id, d.day
"""


DAILY_CONSUMPTION = daily_consumption()
# Whole-table inputs of daily_consumption: a file of these formatted since means a full rebuild
# (a new CRM export can move any meter to another customer, region or tariff).
DAILY_REBUILT_BY = ("customers", "tariffs")
# The days whose inputs changed since $since: readings meter_readings rewrote, weather formatted.
DAILY_CHANGED_DAYS = (
    f"{blocks.changed_days(SERIES)} UNION {blocks.days_formatted_since('weather', 'observed_at')}"
)

UNKNOWN_METERS = """
    SELECT r.meter_id, count(*) AS readings, min(r.reading_start) AS first, max(r.reading_start) AS last
    FROM exploitation.meter_readings r ANTI JOIN exploitation.customers c USING (meter_id)
    GROUP BY ALL ORDER BY r.meter_id
"""
