"""The warehouse resource: DuckDB behind dagster-duckdb's ``DuckDBResource`` interface.

It adds what the stock resource lacks for a shared file: a short wait, then a clear error naming the
process that holds the lock (instead of ~100 s of silent retries); connections closed even when a
step fails; UTC as the session time zone; a memory limit (larger work spills to disk); and a
transaction helper so every write is atomic.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource
from pydantic import Field


class WarehouseLocked(RuntimeError):
    """Another process holds the DuckDB file."""


# Anchored on the PID only: what DuckDB writes after it varies (1.5.6 adds a hint when the holder
# has the file read-only), and the holder's path may hold spaces or dots.
_HOLDER = re.compile(r"Conflicting lock is held in (?P<holder>.+?) \(PID (?P<pid>\d+)\)")


def _lock_message(path: str, error: Exception) -> str:
    match = _HOLDER.search(str(error))
    holder = f"{match['holder']} (PID {match['pid']})" if match else "another process"
    return (
        f"The warehouse {path} is locked by {holder}. DuckDB allows one process per file: close "
        "that process (a DuckDB shell or notebook left open, or another run outside the Dagster "
        f"pool) and retry. Original error: {error}"
    )


@contextmanager
def atomic(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction on an open connection: committed on success, rolled back on any error.

    DuckDB holds a transaction's appended rows in memory until the commit, so a step writing more
    than fits commits in units that are consistent on their own (see the formatted zone)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Warehouse(DuckDBResource):
    lock_timeout_s: float = Field(
        default=30.0, description="How long to wait for another process to release the file."
    )
    memory_limit: str = Field(
        default="3GB",
        description="DuckDB's memory limit; joins, sorts and windows beyond it spill to disk "
        "beside the database file (DuckDB's default, 80% of RAM, would crowd out the step itself)",
    )

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.1
        while True:
            try:
                # No replacement scans: a table that does not exist is an error, not a Python
                # variable of that name (a missing `customers` table once read an asset object).
                config = {"python_enable_replacements": False, **self.connection_config}
                conn = duckdb.connect(self.database, config=config)
                break
            except duckdb.IOException as error:
                if "lock" not in str(error).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseLocked(_lock_message(self.database, error)) from error
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute(f"SET memory_limit = '{self.memory_limit}'")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside one transaction: committed on success, rolled back on any error."""
        with self.get_connection() as conn, atomic(conn):
            yield conn

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self.get_connection() as conn:
            return conn.execute(sql, params or []).pl()
