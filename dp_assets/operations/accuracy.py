"""Live accuracy of every pipeline's models per month, as a plain table any BI tool can query."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

ACCURACY_TABLE = "reporting.model_accuracy"


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
