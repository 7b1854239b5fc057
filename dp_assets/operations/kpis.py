"""Business KPIs as plain tables any BI tool can query (SQL over the exploitation zone and the
pipelines' live accuracy)."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_projects.utility.model import REGIONS

KPIS_TABLE = "reporting.kpis"
ACCURACY_TABLE = "reporting.model_accuracy"


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


class ModelAccuracy(pa.DataFrameModel):
    """Live accuracy of each pipeline's models per month (the forecast error KPI among them)."""

    pipeline: str = pa.Field(description="Analytical pipeline (registered model name)")
    month: pl.Date = pa.Field(description="First day of the month the predictions were made in")
    model: str = pa.Field(description="champion (served) or challenger (shadow)")
    metric: str = pa.Field(description="Metric name, as in the evaluation table")
    value: float = pa.Field(description="Mean of the daily values weighted by their rows")
    rows: int = pa.Field(ge=1, description="Predictions with actuals behind the value")

    class Config:
        strict = True
        unique = ["pipeline", "month", "model", "metric"]


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


def model_accuracy(pipelines: list[str]) -> str:
    """Accuracy per pipeline, month, model and metric. The weighted sum adds in a fixed order (a
    metric may be NaN, which a DECIMAL cannot hold), so the value does not depend on the order a
    parallel aggregation meets the rows."""
    return (
        " UNION ALL ".join(
            f"""SELECT '{p}' AS pipeline, CAST(date_trunc('month', as_of) AS DATE) AS month, model, metric,
                   round(sum(value * rows ORDER BY as_of, model_version) / sum(rows), 6) AS value, CAST(sum(rows) AS BIGINT) AS rows
            FROM {p}.live_accuracy WHERE value IS NOT NULL GROUP BY ALL"""
            for p in pipelines
        )
        + " ORDER BY pipeline, month, model, metric"
    )
