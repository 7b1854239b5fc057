"""``exploitation/meter_readings``: both vendors' half-hourly readings, deduplicated, integrated
file by file (the platform's ``build_series_asset``); and the cross-source check that every
reading's meter belongs to a known customer.

An unknown meter is a warning, not an error, and not declared expected: downstream reads stay
right (its readings are kept, only attributed to no customer), but someone should act, on the
customer master or with the vendor. The sample data plants such meters on purpose (one no CRM
lists, and those whose only CRM record is rejected), so the demo shows this warning."""

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from dp_assets.exploitation.incremental import build_series_asset
from dp_assets.metadata import WAREHOUSE_POOL, markdown
from dp_assets.resources import Warehouse
from dp_projects.utility.views._queries import CUSTOMERS, READINGS, SERIES, UNKNOWN_METERS

meter_readings = build_series_asset(READINGS, SERIES, version="2")


@asset_check(
    asset=READINGS.key,
    additional_deps=[CUSTOMERS.key],
    description="Every reading's meter belongs to a known customer (cross-source check)",
    pool=WAREHOUSE_POOL,
)
def meters_known(warehouse: Warehouse) -> AssetCheckResult:
    unknown = warehouse.query(UNKNOWN_METERS)
    readings = int(unknown["readings"].sum() or 0)
    if unknown.is_empty():
        description = "every reading's meter belongs to a known customer"
    else:
        meters = ", ".join(unknown["meter_id"].head(3)) + (", ..." if unknown.height > 3 else "")
        description = (
            f"{unknown.height} meters ({meters}; {readings:,} readings) belong to no known "
            "customer: add them to the CRM export, or fix their rejected records "
            "(formatted.customers_rejects); readings are kept, unattributed"
        )
    return AssetCheckResult(
        check_name="meters_known",
        passed=unknown.is_empty(),
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "unknown meters": MetadataValue.int(unknown.height),
            "readings of unknown meters": MetadataValue.int(readings),
            "meters": markdown(unknown, rows=20),
        },
    )


ASSETS = [meter_readings, meters_known]
