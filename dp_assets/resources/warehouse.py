"""The warehouse resource: DuckDB behind dagster-duckdb's ``DuckDBResource`` interface.

Two backends, chosen by configuration (``Warehouse.from_settings``); assets see the same SQL names
(``schema.table``) on both:

- ``duckdb`` (the default): one DuckDB file, which one process at a time may open.
- ``ducklake``: a DuckLake (a SQL catalog, e.g. PostgreSQL, and data as Parquet files under a data
  path) attached to an in-memory DuckDB as ``lake`` and made the default database, so several
  processes on several machines read and write it at once, each commit a snapshot. The ducklake
  and postgres extensions are loaded by path from their PyPI wheels (``INSTALL`` needs network).

It adds what the stock resource lacks for a shared file: a short wait, then a clear error naming the
process that holds the lock (instead of ~100 s of silent retries); connections closed even when a
step fails; UTC as the session time zone; a memory limit (larger work spills to disk); and a
transaction helper so every write is atomic. On a lake, two writers of one table never both
commit: the second runs its step again (``lake_writers``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource
from pydantic import Field

from dp_assets.resources import lake_writers

if TYPE_CHECKING:
    from dp_assets.settings import Settings

# The name the lake is attached under; `USE lake` makes it what `current_database()` returns.
LAKE = "lake"
# How far two machines' clocks (a writer's, the storage's, the Dagster instance's) may disagree.
CLOCK_MARGIN = dt.timedelta(minutes=1)


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
    than fits commits in units that are consistent on their own (see the formatted zone). On a
    lake, inside a step, it first claims the step's tables (see ``lake_writers``)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        claimed = lake_writers.claim(conn, LAKE)
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if claimed:
        lake_writers.committed(conn, claimed, LAKE)


def _extension(package: str, name: str, why: str = "") -> str:
    """The path of an extension shipped by its PyPI wheel (``duckdb_extension_<name>``), built for
    the installed duckdb (setup.py pins both to one version)."""
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError:
        wheel = package.replace("_", "-")
        raise RuntimeError(
            f"{why or 'The warehouse'} needs DuckDB's {name} extension: pip install "
            f"'{wheel}=={duckdb.__version__}' (or the project's [object-storage] extra)"
        ) from None
    folder = Path(module.__file__).parent / "extensions"
    return str(folder / f"v{duckdb.__version__}" / f"{name}.duckdb_extension")


# The extension that reads and writes a data path on object storage, by the path's scheme.
_STORAGE = {
    **dict.fromkeys(("s3", "gs", "gcs", "r2", "http", "https"), "httpfs"),
    **dict.fromkeys(("az", "azure", "abfss"), "azure"),
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Warehouse(DuckDBResource):
    backend: Literal["duckdb", "ducklake"] = Field(
        default="duckdb",
        description="duckdb: the file `database`; ducklake: the DuckLake `lake_catalog` with its "
        "Parquet files under `lake_data_path` (`database` is then ':memory:')",
    )
    lake_catalog: str = Field(
        default="",
        description="DuckLake catalog after `ducklake:`, e.g. `postgres:dbname=lake host=...`, "
        "or a local `metadata.ducklake` file",
    )
    lake_data_path: str = Field(default="", description="Where the lake's Parquet files live.")
    temp_directory: str = Field(
        default="", description="Where spills go (an in-memory database has no file beside it)."
    )
    lock_timeout_s: float = Field(
        default=30.0, description="How long to wait for another process to release the file."
    )
    memory_limit: str = Field(
        default="3GB",
        description="DuckDB's memory limit; joins, sorts and windows beyond it spill to disk "
        "beside the database file (DuckDB's default, 80% of RAM, would crowd out the step itself)",
    )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> Warehouse:
        """The warehouse the settings name (``DP_WAREHOUSE`` and the lake's settings): the only
        way the platform builds one."""
        if settings.warehouse_backend == "ducklake":
            return cls(
                database=":memory:",
                backend="ducklake",
                lake_catalog=settings.lake_catalog,
                lake_data_path=str(settings.lake_data_path),
                temp_directory=str(settings.data_dir / "tmp"),
                **overrides,
            )
        return cls(database=str(settings.warehouse), **overrides)

    @property
    def location(self) -> str:
        """Where the warehouse lives, for messages: the file, or the lake's catalog."""
        return f"ducklake:{self.lake_catalog}" if self.backend == "ducklake" else self.database

    def exists(self) -> bool:
        """Whether anything was written yet (a lake's catalog is created when first attached)."""
        return self.backend == "ducklake" or Path(self.database).exists()

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.backend == "ducklake":
            conn = self._lake_connection()
        else:
            conn = self._file_connection()
        try:
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute(f"SET memory_limit = '{self.memory_limit}'")
            yield conn
        except duckdb.TransactionException as error:
            if conn in lake_writers.lake_connections and lake_writers.is_conflict(error):
                raise lake_writers.conflict(error) from error
            raise
        finally:
            conn.close()

    def _lake_connection(self) -> duckdb.DuckDBPyConnection:
        # Autoloading would try to download what is not loaded; every extension needed is loaded
        # by path below, and a missing one should fail here, not reach for the network.
        config = {
            "python_enable_replacements": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            **({"temp_directory": self.temp_directory} if self.temp_directory else {}),
            **self.connection_config,
        }
        conn = duckdb.connect(":memory:", config=config)
        try:
            conn.execute(f"LOAD {_quote(_extension('duckdb_extension_ducklake', 'ducklake'))}")
            if self.lake_catalog.startswith("postgres:"):
                path = _extension("duckdb_extension_postgres_scanner", "postgres_scanner")
                conn.execute(f"LOAD {_quote(path)}")
            scheme, found, _ = self.lake_data_path.partition("://")
            if found and (storage := _STORAGE.get(scheme.lower())):
                why = f"The lake's data path {self.lake_data_path}"
                conn.execute(
                    f"LOAD {_quote(_extension(f'duckdb_extension_{storage}', storage, why))}"
                )
            options = f" (DATA_PATH {_quote(self.lake_data_path)})" if self.lake_data_path else ""
            conn.execute(f"ATTACH {_quote('ducklake:' + self.lake_catalog)} AS {LAKE}{options}")
            conn.execute(f"USE {LAKE}")
            lake_writers.lake_connections.add(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _file_connection(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.1
        while True:
            try:
                # No replacement scans: a table that does not exist is an error, not a Python
                # variable of that name (a missing `customers` table once read an asset object).
                config = {"python_enable_replacements": False, **self.connection_config}
                return duckdb.connect(self.database, config=config)
            except duckdb.IOException as error:
                if "lock" not in str(error).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseLocked(_lock_message(self.database, error)) from error
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside one transaction: committed on success, rolled back on any error."""
        with self.get_connection() as conn, atomic(conn):
            yield conn

    def forget_history(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Make committed deletions physical, so that no file or catalog row still holds a deleted
        row, with no writer at work (an erasure with writers at work calls the two steps itself,
        waiting between them: ``governance.erasure_job``)."""
        snapshot = self.rewrite_deleted_rows(conn)
        if snapshot is not None:
            self.expire_history(conn, snapshot, dt.datetime.now(dt.UTC) - CLOCK_MARGIN)

    def rewrite_deleted_rows(self, conn: duckdb.DuckDBPyConnection) -> int | None:
        """Step 1 of ``forget_history``. A DuckDB file: a CHECKPOINT writes the deletions into the
        file, and that is all (None). A lake keeps every deleted row, so: flush inlined rows
        (small inserts live in catalog tables, deleted ones too) to Parquet; rewrite every data
        file that has deletions without those rows (a DELETE only records a delete file; the data
        file, still current, keeps the rows). Returns the snapshot from which on no snapshot
        holds a deleted row: the older ones are for ``expire_history``."""
        if self.backend != "ducklake":
            conn.execute("CHECKPOINT")
            return None
        lake = _quote(LAKE)
        conn.execute(f"CALL ducklake_flush_inlined_data({lake})")
        conn.execute(f"CALL ducklake_rewrite_data_files({lake}, delete_threshold => 0)")
        return conn.execute(f"SELECT id FROM ducklake_current_snapshot({lake})").fetchone()[0]

    def expire_history(
        self, conn: duckdb.DuckDBPyConnection, snapshot: int, files_before: dt.datetime
    ) -> int:
        """Step 2 of ``forget_history``, on a lake: expire the snapshots before ``snapshot`` (by
        id: the writers' clocks need not agree), delete the files no snapshot needs now, and the
        files of writes that never committed (a killed writer's) from before ``files_before``.
        A transaction open on an expired snapshot would no longer see what it conflicts with,
        and a live writer's files are not committed yet: call it when no writer that was at work
        before ``snapshot`` still is. A query reading an older snapshot then fails: the time
        travel it relies on is what an erasure must end. Returns the uncommitted files left
        (written since ``files_before``)."""
        lake = _quote(LAKE)
        older = conn.execute(
            f"SELECT list(snapshot_id) FROM ducklake_snapshots({lake}) WHERE snapshot_id < ?",
            [snapshot],
        ).fetchone()[0]
        if older:
            conn.execute(f"CALL ducklake_expire_snapshots({lake}, versions => ?)", [older])
        conn.execute(f"CALL ducklake_cleanup_old_files({lake}, cleanup_all => true)")
        orphans = f"CALL ducklake_delete_orphaned_files({lake}, "
        conn.execute(orphans + "older_than => ?)", [files_before])
        return len(conn.execute(orphans + "dry_run => true, cleanup_all => true)").fetchall())

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self.get_connection() as conn:
            return conn.execute(sql, params or []).pl()
