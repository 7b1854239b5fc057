"""``exploitation/customers`` and ``exploitation/customer_id_map``: the CRM records (the latest
export of each) resolved into one row per person (``_entity_resolution``)."""

from dagster import MetadataValue, multi_asset

from dp_assets.metadata import WAREHOUSE_POOL, roll_back_unless_passed, schema_check_spec
from dp_assets.resources import Warehouse
from dp_assets.resources.tables import replace_table_with
from dp_projects.utility.views._entity_resolution import resolve
from dp_projects.utility.views._queries import CRM_RECORDS, CUSTOMERS, ID_MAP


@multi_asset(
    name="exploitation_customers",
    specs=[
        CUSTOMERS.spec([["formatted", "customers"]], "1"),
        ID_MAP.spec([["formatted", "customers"]], "1"),
    ],
    check_specs=[schema_check_spec(t.key) for t in (CUSTOMERS, ID_MAP)],
    pool=WAREHOUSE_POOL,
)
def customers(warehouse: Warehouse):
    """Entity resolution of the CRM records (latest export of each) into one row per person."""
    with warehouse.transaction() as conn:
        records = conn.execute(CRM_RECORDS).pl()
        resolved, id_map = resolve(records)
        for table, frame in ((CUSTOMERS, resolved), (ID_MAP, id_map)):
            columns = table.schema.to_schema().columns  # the frame's order: customer_id first
            replace_table_with(
                conn, table.table, frame.select([c for c in frame.columns if c in columns])
            )
        merged = {
            "CRM records": MetadataValue.int(records.height),
            "people": MetadataValue.int(resolved.height),
        }
        outputs = [CUSTOMERS.results(conn, **merged), ID_MAP.results(conn)]
        yield from roll_back_unless_passed(*(check for _, check in outputs))
    for materialization, _ in outputs:
        yield materialization
    for _, check in outputs:
        yield check


ASSETS = [customers]
