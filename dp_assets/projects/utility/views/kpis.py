"""``reporting/kpis``: the utility's business KPIs per month and region as a plain table any BI
tool can query (SQL over its exploitation tables); ``dp report`` shows it when it exists."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl
from dagster import AssetKey, asset

from dp_assets.metadata import (
    OWNER,
    WAREHOUSE_POOL,
    schema_check_spec,
    spec_metadata,
    stored_table_results,
)
from dp_assets.resources import Warehouse
from dp_assets.resources.tables import replace_table
from dp_projects.utility.model import REGIONS
from dp_projects.utility.views._queries import CUSTOMERS, DAILY

KPIS_TABLE = "reporting.kpis"
KPIS_KEY = AssetKey(["reporting", "kpis"])


class Kpi(pa.DataFrameModel):
    """Customers and consumption per month and region ('all' is the whole company)."""

    month: pl.Date = pa.Field(description="First day of the calendar month")
    region: str = pa.Field(isin=(*REGIONS, "all"), description="Service region, or 'all'")
    active_customers: int = pa.Field(ge=0, description="Customers with a contract during the month")
    new_customers: int = pa.Field(ge=0, description="Contracts that started in the month")
    churned_customers: int = pa.Field(ge=0, description="Contracts that ended in the month")
    churn_rate: Optional[float] = pa.Field(
        nullable=True, ge=0.0, le=1.0, description="churned_customers / active_customers"
    )
    kwh: float = pa.Field(ge=0.0, description="Energy consumed in the month, kWh (as metered)")
    kwh_per_customer_day: Optional[float] = pa.Field(
        nullable=True, description="kwh / customer-days with readings"
    )
    cost_net_pln: Optional[float] = pa.Field(
        nullable=True, description="Energy cost at the tariff price, net of VAT, PLN"
    )

    class Config:
        strict = True
        unique = ["month", "region"]


KPIS = """
WITH months AS (
    SELECT DISTINCT CAST(date_trunc('month', day) AS DATE) AS month FROM exploitation.daily_consumption
),
people AS (
    SELECT m.month, c.region,
           c.contract_start <= last_day(m.month) AND coalesce(c.contract_end >= m.month, true) AS active,
           c.contract_start BETWEEN m.month AND last_day(m.month) AS joined,
           coalesce(c.contract_end BETWEEN m.month AND last_day(m.month), false) AS churned
    FROM months m CROSS JOIN exploitation.customers c
),
customers AS (
    SELECT month, coalesce(region, 'all') AS region, count(*) FILTER (active) AS active_customers,
           count(*) FILTER (joined) AS new_customers, count(*) FILTER (churned) AS churned_customers
    FROM people GROUP BY GROUPING SETS ((month, region), (month))
),
usage AS (
    SELECT CAST(date_trunc('month', day) AS DATE) AS month, coalesce(region, 'all') AS region,
           sum(CAST(kwh AS DECIMAL(18, 6))) AS kwh, count(*) AS customer_days,
           sum(CAST(cost_net_pln AS DECIMAL(18, 6))) AS cost
    FROM exploitation.daily_consumption
    GROUP BY GROUPING SETS ((CAST(date_trunc('month', day) AS DATE), region), (CAST(date_trunc('month', day) AS DATE)))
)
SELECT c.month, c.region, c.active_customers, c.new_customers, c.churned_customers,
       round(c.churned_customers / nullif(c.active_customers, 0), 6) AS churn_rate,
       CAST(round(coalesce(u.kwh, 0), 3) AS DOUBLE) AS kwh,
       round(CAST(u.kwh AS DOUBLE) / nullif(u.customer_days, 0), 4) AS kwh_per_customer_day,
       CAST(round(u.cost, 2) AS DOUBLE) AS cost_net_pln
FROM customers c LEFT JOIN usage u USING (month, region)
ORDER BY c.month, c.region
"""


@asset(
    key=KPIS_KEY,
    description=f"Business KPIs per month and region ({KPIS_TABLE}): active, new and churned "
    "customers, churn rate, consumption and its cost",
    deps=[CUSTOMERS.key, DAILY.key],
    metadata=spec_metadata(Kpi, KPIS_TABLE),
    group_name="reporting",
    owners=[OWNER],
    kinds={"duckdb", "sql"},
    code_version="1",
    check_specs=[schema_check_spec(KPIS_KEY)],
    pool=WAREHOUSE_POOL,
)
def kpis(warehouse: Warehouse):
    with warehouse.transaction() as conn:
        replace_table(conn, KPIS_TABLE, KPIS)
        yield from stored_table_results(conn, KPIS_TABLE, Kpi, KPIS_KEY)


ASSETS = [kpis]
