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
    conn.register("_empty", empty_frame(schema))
    try:
        columns = conn.execute("DESCRIBE SELECT * FROM _empty").fetchall()
    finally:
        conn.unregister("_empty")
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


def replace_changed_rows(
    conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, key: list[str], version: str
) -> str:
    """Make ``table`` hold exactly ``frame``'s rows, writing only the rows that differ.

    A table rebuilt every run whose rows mostly stay the same (a day's examples added, a few
    labels and splits moved) then costs a small transaction instead of a full rewrite, its
    write-ahead log and checkpoint. Rows are matched by ``key``: a key whose row differs in any
    column, or exists on one side only, is deleted and written again from ``frame``. A new table,
    one whose columns or types changed, or one another ``version`` of the code wrote (kept as the
    table's comment) is written whole, so that a new version's rules check every row.

    Returns the SQL after ``FROM <table> t`` that selects the rows written (for their check), on
    this connection until its next call: the keys stay in one temporary table, ``_written``.
    """
    keys, comment = ", ".join(f'"{k}"' for k in key), f"code version {version}"
    stored = _catalog_comment(conn, table)
    conn.register("_frame", frame)
    try:
        if stored != (comment,) or _names_and_types(conn, table) != _names_and_types(
            conn, "_frame"
        ):
            replace_table(conn, table, "SELECT * FROM _frame")
            conn.execute(f"COMMENT ON TABLE {table} IS '{comment}'")
            return ""
        # `stored IS DISTINCT FROM new` compares whole rows as structs, NULLs (and NaNs) equal.
        changed = conn.execute(
            f"SELECT {keys} FROM {table} stored FULL JOIN _frame new USING ({keys}) "
            "WHERE stored IS DISTINCT FROM new"
        ).pl()
    finally:
        conn.unregister("_frame")
    on = " AND ".join(f't."{k}" = w."{k}"' for k in key)
    conn.register("_changed", changed)
    try:
        conn.execute("CREATE OR REPLACE TEMP TABLE _written AS SELECT * FROM _changed")
    finally:
        conn.unregister("_changed")
    conn.execute(f"DELETE FROM {table} t USING _written w WHERE {on}")
    insert(conn, table, frame.join(changed, on=key, how="semi"))  # polars picks them faster
    return f"SEMI JOIN _written w ON {on}"


def _names_and_types(conn: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    # Names and types only: DuckLake reports a default of 'NULL' where DuckDB reports none.
    return [(name, dtype) for name, dtype, *_ in conn.execute(f"DESCRIBE {relation}").fetchall()]


def row_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def no_input_yet(conn: duckdb.DuckDBPyConnection, tables) -> str | None:
    """Why a step reading ``tables`` has nothing to read yet (some not built, or every one
    empty), or None: a view or sandbox then skips instead of failing."""
    if missing := [t for t in tables if not table_exists(conn, t)]:
        return f"input tables not built yet: {', '.join(missing)}"
    if tables and not any(row_count(conn, t) for t in tables):
        return f"every input is empty: {', '.join(tables)}"
    return None


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    return _catalog_comment(conn, table) is not None


def _catalog_comment(conn: duckdb.DuckDBPyConnection, table: str) -> tuple | None:
    """``(comment,)`` of ``schema.table`` in the catalog, None when there is no such table."""
    return conn.execute(
        "SELECT comment FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ?",
        table.split("."),
    ).fetchone()


def table_columns(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """Every stored table (``schema.table``) with its column names, from DuckDB's catalog."""
    columns: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT schema_name || '.' || table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND NOT internal"
    ).fetchall():
        columns.setdefault(table, set()).add(column)
    return columns
