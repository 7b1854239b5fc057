"""``exploitation/meter_readings``: both vendors' half-hourly readings, deduplicated, integrated
file by file (the platform's ``build_series_asset``); and the cross-source check that every
reading's meter belongs to a known customer."""

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
    return AssetCheckResult(
        check_name="meters_known",
        passed=unknown.is_empty(),
        severity=AssetCheckSeverity.WARN,
        metadata={
            "unknown meters": MetadataValue.int(unknown.height),
            "readings of unknown meters": MetadataValue.int(int(unknown["readings"].sum() or 0)),
            "meters": markdown(unknown, rows=20),
        },
    )


ASSETS = [meter_readings, meters_known]
