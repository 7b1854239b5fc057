"""Catalog metadata derived from the Pandera schemas, so column docs are written once.

Also the asset-spec conventions every zone shares (owner, kinds, pool), applied here rather than
repeated per asset.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetCheckSeverity,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
)

OWNER = "team:data-platform"
WAREHOUSE_POOL = "warehouse"  # DuckDB admits one writer process: every warehouse step joins it
PREVIEW_ROWS = 5


def column_schema(schema: type[pa.DataFrameModel]) -> TableSchema:
    columns = schema.to_schema().columns
    missing = [name for name, column in columns.items() if not column.description]
    if missing:
        raise ValueError(f"{schema.__name__}: columns without a description: {missing}")
    return TableSchema(
        columns=[
            TableColumn(name, str(column.dtype), description=column.description)
            for name, column in columns.items()
        ]
    )


def spec_metadata(schema: type[pa.DataFrameModel], table: str | None = None) -> dict:
    metadata = {"dagster/column_schema": column_schema(schema)}
    if table:
        metadata["dagster/table_name"] = table
    return metadata


def column_lineage(deps: dict[str, tuple[str, ...]]) -> dict:
    """``dagster/column_lineage`` from ``{column: ("zone/asset.column", ...)}``."""
    return {
        "dagster/column_lineage": TableColumnLineage(
            deps_by_column={
                column: [
                    TableColumnDep(AssetKey(asset.split("/")), name)
                    for asset, _, name in (source.rpartition(".") for source in sources)
                ]
                for column, sources in deps.items()
            }
        )
    }


def markdown(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> MetadataValue:
    with pl.Config(
        tbl_formatting="ASCII_MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_rows=rows,
        tbl_cols=-1,
        tbl_width_chars=10_000,
        fmt_str_lengths=80,
    ):
        return MetadataValue.md(str(frame.head(rows)))


def table_metadata(row_count: int, preview: pl.DataFrame) -> dict:
    return {"dagster/row_count": MetadataValue.int(row_count), "preview": markdown(preview)}


def stored_table_results(
    conn, table: str, schema: type[pa.DataFrameModel], key: AssetKey, **extra
) -> tuple[MaterializeResult, AssetCheckResult]:
    """Materialization metadata of a stored table and its blocking schema check (named 'schema')."""
    stored = conn.execute(f"SELECT * FROM {table}").pl()
    return (
        MaterializeResult(
            asset_key=key, metadata={**table_metadata(stored.height, stored), **extra}
        ),
        schema_check(schema, stored, asset_key=key),
    )


def schema_check_spec(
    key, description: str = "Stored rows pass the Pandera schema"
) -> AssetCheckSpec:
    """The blocking check every stored table has; ``schema_check`` yields its result."""
    return AssetCheckSpec("schema", asset=key, blocking=True, description=description)


def schema_check(
    schema: type[pa.DataFrameModel], frame: pl.DataFrame, check_name: str = "schema", **kwargs
) -> AssetCheckResult:
    """Validate stored rows with the Pandera schema; the result lists the first failures."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        return AssetCheckResult(
            check_name=check_name,
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "failures": MetadataValue.int(cases.height),
                "first failures": markdown(cases, 20),
            },
            **kwargs,
        )
    return AssetCheckResult(
        check_name=check_name,
        passed=True,
        metadata={"rows validated": MetadataValue.int(frame.height)},
        **kwargs,
    )
