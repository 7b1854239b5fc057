"""``exploitation/daily_consumption``: consumption per customer and UTC day with the day's
weather and the month's tariff price, recomputed only for the days whose inputs changed."""

import datetime as dt

import duckdb
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from dp_assets.exploitation.incremental import (
    Check,
    build_sql_asset,
    earliest_day,
    formatted_since,
)
from dp_projects.utility.views._queries import (
    CUSTOMERS,
    DAILY,
    DAILY_CHANGED_DAYS,
    DAILY_CONSUMPTION,
    DAILY_REBUILT_BY,
    READINGS,
    SERIES,
    daily_consumption as daily_query,
)


def update_daily(conn: duckdb.DuckDBPyConnection, since: dt.datetime) -> str | None:
    """Recompute every customer's rows of the days whose readings or weather changed since the
    last run; None (rebuild) when a CRM export or a tariff file was formatted since."""
    if formatted_since(conn, DAILY_REBUILT_BY, since):
        return None
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _daily_days AS {DAILY_CHANGED_DAYS}", {"since": since}
    )
    conn.execute(f"DELETE FROM {DAILY.table} WHERE day IN (SELECT day FROM _daily_days)")
    conn.execute(
        f"INSERT INTO {DAILY.table} {daily_query('_daily_days')}",
        earliest_day(conn, "_daily_days"),
    )
    return "WHERE t.day IN (SELECT day FROM _daily_days)"


def _context_present(conn: duckdb.DuckDBPyConnection) -> AssetCheckResult:
    rows, no_weather, no_price = conn.execute(
        "SELECT count(*), count(*) FILTER (temperature_mean_c IS NULL), "
        f"count(*) FILTER (price_net_pln_per_kwh IS NULL) FROM {DAILY.table}"
    ).fetchone()
    return AssetCheckResult(
        check_name="weather_and_price_present",
        passed=no_weather == 0 and no_price == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "rows": MetadataValue.int(rows),
            "rows without weather": MetadataValue.int(no_weather),
            "rows without price": MetadataValue.int(no_price),
        },
    )


daily_consumption = build_sql_asset(
    DAILY,
    DAILY_CONSUMPTION,
    deps=[READINGS.key, CUSTOMERS.key, ["formatted", "weather"], ["formatted", "tariffs"]],
    version="2",
    follows=SERIES,
    update=update_daily,
    checks=(
        Check(
            "weather_and_price_present",
            "Every customer-day has its region's weather and a tariff price",
            _context_present,
        ),
    ),
)

ASSETS = [daily_consumption]
