"""Polars frames shaped by a Pandera model (no Dagster here, so pure transforms can use it)."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl


def polars_schema(schema: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    return {name: column.dtype.type for name, column in schema.to_schema().columns.items()}


def empty_frame(schema: type[pa.DataFrameModel]) -> pl.DataFrame:
    return pl.DataFrame(schema=polars_schema(schema))
