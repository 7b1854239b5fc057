"""Table writes on an open DuckDB connection: created from the Pandera schema, replaced by key."""

from __future__ import annotations

import duckdb
import pandera.polars as pa
import polars as pl

from dp_assets.frames import empty_frame


def ensure_table(
    conn: duckdb.DuckDBPyConnection, table: str, schema: type[pa.DataFrameModel]
) -> None:
    """Create ``schema.table`` with the model's columns and types if it does not exist.

    Explicit DDL (types as DuckDB maps the polars ones), not ``CREATE TABLE AS`` an empty frame:
    with duckdb 1.5.6 a table created that way and then given one large insert (a few hundred
    thousand rows) in the same transaction reads as empty until the commit, so checks run on the
    stored rows validated nothing (test_tables.py reproduces it).
    """
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    empty = empty_frame(schema)  # noqa: F841 - read by DuckDB's replacement scan
    columns = conn.execute("DESCRIBE SELECT * FROM empty").fetchall()
    ddl = ", ".join(f'"{name}" {dtype}' for name, dtype, *_ in columns)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({ddl})")


def insert(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    if frame.height:
        conn.register("_frame", frame)
        try:
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _frame")
        finally:
            conn.unregister("_frame")


def replace_where(
    conn: duckdb.DuckDBPyConnection, table: str, column: str, values: list, frame: pl.DataFrame
) -> None:
    """Idempotent write: delete the rows whose ``column`` is in ``values``, insert ``frame``."""
    if values:
        conn.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT unnest(?))", [values])
    insert(conn, table, frame)


def replace_table(conn: duckdb.DuckDBPyConnection, table: str, query: str) -> None:
    """Rebuild a derived table from a query (inside the caller's transaction, so atomic)."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    conn.execute(f"CREATE OR REPLACE TABLE {table} AS {query}")


def replace_table_with(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Rebuild a table from a polars frame (inside the caller's transaction, so atomic)."""
    conn.register("_frame", frame)
    try:
        replace_table(conn, table, "SELECT * FROM _frame")
    finally:
        conn.unregister("_frame")


def row_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".")
    return bool(
        conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = ? AND table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def table_columns(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """Every stored table (``schema.table``) with its column names, from DuckDB's catalog."""
    columns: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT schema_name || '.' || table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND NOT internal"
    ).fetchall():
        columns.setdefault(table, set()).add(column)
    return columns
