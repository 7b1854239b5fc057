"""Pipeline health from Dagster's event log (pure: event facts in, rows out)."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_assets.frames import polars_schema
from dp_assets.sources.schema import UtcTimestamp

HEALTH_TABLE = "monitoring.pipeline_health"
HISTORY = 500  # materializations per asset kept in the table


class PipelineHealthRow(pa.DataFrameModel):
    """One materialization of one asset: how long it took and what it moved."""

    asset: str = pa.Field(description="Asset key, zone/name")
    run_id: str = pa.Field(description="Dagster run that materialized it")
    step: Optional[str] = pa.Field(
        nullable=True,
        description="Dagster step that materialized it: the assets of one step (a source's "
        "table and its rejects, every landing table) share it and its duration",
    )
    materialized_at: UtcTimestamp = pa.Field(
        description="When the materialization was recorded, UTC"
    )
    step_seconds: Optional[float] = pa.Field(
        nullable=True,
        ge=0.0,
        description="Duration of the step that materialized it (shared by the assets of one "
        "step); null for changes recorded outside a step, e.g. an erasure",
    )
    rows_in: Optional[int] = pa.Field(
        nullable=True, description="Records read in this run (formatted zone: records in the files)"
    )
    rows_out: Optional[int] = pa.Field(
        nullable=True,
        description="Rows written in this run (formatted) or rows in the table after it (others)",
    )
    rows_rejected: Optional[int] = pa.Field(
        nullable=True, description="Records rejected in this run"
    )
    reject_rate: Optional[float] = pa.Field(
        nullable=True, ge=0.0, le=1.0, description="rows_rejected / rows_in"
    )
    files_quarantined: Optional[int] = pa.Field(
        nullable=True, description="Files quarantined in this run"
    )

    class Config:
        strict = True


# Materialization metadata (as the assets write it) -> column.
METADATA = {
    "records in": "rows_in",
    "rows formatted": "rows_out",
    "rows rejected": "rows_rejected",
    "files quarantined": "files_quarantined",
}


def health_rows(events: list[dict], step_ms: dict[tuple[str, str], float]) -> pl.DataFrame:
    """``events``: asset, run_id, step_key, timestamp (s) and metadata (plain values) per
    materialization; ``step_ms``: (run_id, step_key) -> the step's duration."""
    rows = []
    for event in events:
        metadata = event["metadata"]
        row = {column: metadata.get(name) for name, column in METADATA.items()}
        if row["rows_out"] is None:
            row["rows_out"] = metadata.get("dagster/row_count")
        duration = step_ms.get((event["run_id"], event["step_key"]))
        rows.append({
            "asset": event["asset"], "run_id": event["run_id"], "step": event["step_key"],
            "materialized_at": event["timestamp"],
            "step_seconds": None if duration is None else round(duration / 1000, 3),
            **row,
        })  # fmt: skip
    frame = pl.DataFrame(
        rows,
        schema={**polars_schema(PipelineHealthRow), "materialized_at": pl.Float64},
    )
    return frame.with_columns(
        materialized_at=pl.from_epoch(
            pl.col("materialized_at") * 1_000_000, "us"
        ).dt.replace_time_zone("UTC"),
        reject_rate=pl.when(pl.col("rows_in") > 0).then(
            pl.col("rows_rejected") / pl.col("rows_in")
        ),
    ).sort("materialized_at", "asset")
