"""Canonical columns every formatted table shares: where each row came from, UTC timestamps."""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

UtcTimestamp = Annotated[pl.Datetime, "us", "UTC"]


class Lineage(pa.DataFrameModel):
    """Where each row came from: enough to find the raw record in the persistent landing."""

    file_sha256: str = pa.Field(
        str_length={"min_value": 64, "max_value": 64},
        description="SHA-256 of the landed raw file this row was read from",
    )
    record_no: int = pa.Field(
        ge=0,
        description="Position of the record in its raw file: the line number for CSV and JSON "
        "Lines (header is line 1), the array index for JSON documents",
    )

    class Config:
        strict = True
        coerce = False
