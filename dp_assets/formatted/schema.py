"""Tables of the formatted zone that every source shares: rejects and per-file outcomes."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from dp_assets.sources.schema import Lineage, UtcTimestamp

FILE_STATUSES = ("formatted", "quarantined")


class Reject(Lineage):
    """A raw record that did not make it into the canonical table, and why."""

    raw_record: str = pa.Field(
        description="The raw record as text (cut at 2,000 characters; withheld where it holds PII)"
    )
    reason: str = pa.Field(
        description="Why the record was rejected; several reasons joined by '; '"
    )


class FileOutcome(pa.DataFrameModel):
    """What the formatted zone did with each landed file (bookkeeping, one row per file)."""

    source: str = pa.Field(description="Raw source the file belongs to")
    file_sha256: str = pa.Field(description="SHA-256 of the landed file")
    original_name: str = pa.Field(description="File name as delivered to the inbox")
    status: str = pa.Field(
        isin=FILE_STATUSES, description="formatted, or quarantined when unreadable"
    )
    records_in: int = pa.Field(ge=0, description="Records read from the file")
    rows_formatted: int = pa.Field(ge=0, description="Records stored in the formatted table")
    rows_rejected: int = pa.Field(ge=0, description="Records stored in the rejects table")
    reason: Optional[str] = pa.Field(nullable=True, description="Quarantine reason")
    notes: Optional[str] = pa.Field(
        nullable=True, description="File-level remarks that did not stop it"
    )
    transform_version: str = pa.Field(description="Code version of the source's transform")
    processed_at: UtcTimestamp = pa.Field(description="When the file was processed, UTC")

    class Config:
        strict = True
        unique = ["source", "file_sha256"]

    @pa.dataframe_check(error="records_in differs from rows_formatted + rows_rejected")
    def every_record_accounted_for(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("records_in") == pl.col("rows_formatted") + pl.col("rows_rejected")
        )


def reason_group(column: str = "reason") -> str:
    """SQL grouping rejects by kind: quoted values and numbers vary per row, the rest does not."""
    return rf"regexp_replace({column}, '''[^'']*''|-?\d+(\.\d+)?', '…', 'g')"
