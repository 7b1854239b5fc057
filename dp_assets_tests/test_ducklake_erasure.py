"""Erasure on a DuckLake really erases: after `dp erase`, no Parquet file under the lake's data path
and no row of its PostgreSQL catalog still holds the person's values (a lake keeps deleted rows in
older snapshots' files, and small inserts in catalog tables), while everyone else is still there.

Skipped where the PostgreSQL server binaries are missing (the session's ``postgres`` fixture)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest

from dp_assets.governance.erasure import ERASURE_LOG
from dp_assets.resources import Warehouse
from dp_assets_tests.conftest import BACKBONE, WORLD, Platform, Postgres, isolated_platform
from dp_assets_tests.test_erasure import dp_erase
from dp_projects.utility.sample_data.generator import generate

pytestmark = pytest.mark.slow

# Changed by the erasure by design (file hashes, recounted outcomes): the comparison of everyone
# else's rows skips them; the search for the person's values does not.
REWRITTEN = {"landing.deliveries", "formatted.file_outcomes"}
LOG_FOLDER = ERASURE_LOG.replace(".", "/")  # DuckLake writes a table's files under schema/table/


def parquet_hits(data_path: Path, values: set[str]) -> dict[str, dict[str, int]]:
    """Per Parquet file under ``data_path``: per column, the rows with a cell containing one of
    ``values``, and ``bytes`` if the file's bytes hold one (its footer's min/max statistics are
    plain text)."""
    hits = {}
    for path in sorted(data_path.rglob("*.parquet")):
        frame = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").pl()
        found = {
            column: n
            for column in frame.columns
            if (n := frame[column].cast(pl.String).str.contains_any(sorted(values)).sum())
        }
        if any(v.encode() in path.read_bytes() for v in values):
            found["bytes"] = 1
        if found:
            hits[str(path.relative_to(data_path))] = found
    return hits


def catalog_hits(
    postgres: Postgres, dbname: str, values: set[str], except_table: str | None = None
) -> dict[str, int]:
    """Per table of the catalog database: rows with a cell containing one of ``values`` (inlined
    rows are stored as bytea: every cell is read as text). ``except_table`` (schema.table): the
    catalog's rows about that lake table (``table_id``: its column statistics) are not searched."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=postgres.port, user="dagster", dbname=dbname)
    hits = {}
    try:
        with conn.cursor() as cursor:
            skipped = set()
            if except_table:
                cursor.execute(
                    "SELECT t.table_id FROM ducklake_table t JOIN ducklake_schema s USING "
                    "(schema_id) WHERE s.schema_name || '.' || t.table_name = %s",
                    [except_table],
                )
                skipped = {table_id for (table_id,) in cursor.fetchall()}
            cursor.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE "
                "table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            )
            for schema, table in cursor.fetchall():
                cursor.execute(f'SELECT * FROM "{schema}"."{table}"')
                columns = [d.name for d in cursor.description]
                at = columns.index("table_id") if "table_id" in columns else None
                found = sum(
                    any(v in _text(cell) for cell in row for v in values)
                    for row in cursor.fetchall()
                    if at is None or row[at] not in skipped
                )
                if found:
                    hits[f"{schema}.{table}"] = found
    finally:
        conn.close()
    return hits


def _text(cell) -> str:
    if isinstance(cell, memoryview | bytes):
        return bytes(cell).decode("utf-8", errors="replace")
    return "" if cell is None else str(cell)


def lake_tables(platform: Platform) -> dict[str, pl.DataFrame]:
    names = platform.sql(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
        "WHERE database_name = current_database()"
    )
    return {name: platform.frame(f"SELECT * FROM {name}") for (name,) in names}


@dataclass
class LakeErasure:
    platform: Platform
    dbname: str
    customer_id: str
    values: set[str]  # the person's customer id, meter ids and email pseudonyms
    files_before: dict[str, dict[str, int]]
    tables_before: dict[str, pl.DataFrame]


@pytest.fixture(scope="module")
def lake_erasure(tmp_path_factory, postgres: Postgres) -> LakeErasure:
    root = tmp_path_factory.mktemp("lake_erasure")
    catalog = postgres.lake_catalog()
    dbname = catalog.split("dbname=")[1].split()[0]
    with isolated_platform(root, catalog) as platform:
        generate(platform.settings.data_dir, WORLD)
        assert platform.materialize(BACKBONE).success
        customer_id, meter = platform.sql(
            "SELECT customer_id, meter_id FROM exploitation.customers WHERE source_records = 2 "
            "ORDER BY customer_id LIMIT 1"
        )[0]
        keys = platform.sql(
            "SELECT f.meter_id, f.email_pseudonym FROM formatted.customers f "
            "JOIN exploitation.customer_id_map m USING (source_system, source_customer_id) "
            "WHERE m.customer_id = ?",
            [customer_id],
        )
        values = {customer_id, meter} | {v for row in keys for v in row if v}
        data_path = Path(platform.settings.lake_data_path)
        files_before = parquet_hits(data_path, values)
        tables_before = lake_tables(platform)
        # What a writer killed an hour ago leaves: a Parquet file holding the person's rows that
        # no snapshot knows.
        held = data_path / next(iter(files_before))
        orphan = held.with_name("ducklake-killed-writer.parquet")
        shutil.copy(held, orphan)
        os.utime(orphan, (time.time() - 3600,) * 2)
        cli = dp_erase(root, customer_id, DP_WAREHOUSE="ducklake", DP_LAKE_CATALOG=catalog)
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert f"{customer_id} erased" in cli.stdout
        yield LakeErasure(platform, dbname, customer_id, values, files_before, tables_before)


def test_the_persons_values_were_in_the_lakes_files_before(lake_erasure):
    # Else the searches below would prove nothing.
    assert len(lake_erasure.values) >= 3  # a customer id, a meter, an email pseudonym
    assert lake_erasure.files_before


def test_no_parquet_file_holds_the_person_after(lake_erasure):
    data_path = Path(lake_erasure.platform.settings.lake_data_path)
    hits = parquet_hits(data_path, lake_erasure.values)
    # The audit trail names whom the request named (its subject column), and nothing else of them.
    log = {path: found for path, found in hits.items() if path.startswith(f"{LOG_FOLDER}/")}
    assert {path: found for path, found in hits.items() if path not in log} == {}
    assert log and all(set(found) <= {"subject", "bytes"} for found in log.values())


def test_no_catalog_row_holds_the_person_after(lake_erasure, postgres):
    # Bar the audit log's column statistics (the min and max of its subject column).
    hits = catalog_hits(postgres, lake_erasure.dbname, lake_erasure.values, ERASURE_LOG)
    assert hits == {}


def test_no_older_snapshot_is_left_to_travel_back_to(lake_erasure):
    (snapshots,) = lake_erasure.platform.sql("SELECT count(*) FROM ducklake_snapshots('lake')")[0]
    assert snapshots == 1


def test_everyone_else_is_still_there(lake_erasure):
    platform = lake_erasure.platform
    after = lake_tables(platform)
    assert set(after) == set(lake_erasure.tables_before) | {ERASURE_LOG}
    logged = dict(
        platform.sql(f"SELECT object, rows_removed FROM {ERASURE_LOG} WHERE object_kind = 'table'")
    )
    for table, before in lake_erasure.tables_before.items():
        if table in REWRITTEN:
            continue
        # Every row left was there before, and exactly the rows the log counts are gone (which
        # rows those are, test_erasure checks on the DuckDB file, record by record).
        kept = after[table].drop("file_sha256", strict=False)
        assert kept.join(before.drop("file_sha256", strict=False), on=kept.columns,
                         how="anti", nulls_equal=True).is_empty(), table  # fmt: skip
        assert before.height - after[table].height == logged.get(table, 0), table
    customers = platform.sql("SELECT customer_id FROM exploitation.customers")
    before = lake_erasure.tables_before["exploitation.customers"]["customer_id"]
    assert {c for (c,) in customers} == set(before) - {lake_erasure.customer_id}


def test_forget_history_removes_deleted_rows_from_files_and_catalog(tmp_path, postgres):
    """The mechanism on its own: a DELETE leaves the row in its Parquet file (a delete file marks
    it) and a small insert's row in a catalog table; forget_history removes both."""
    catalog = postgres.lake_catalog()
    dbname = catalog.split("dbname=")[1].split()[0]
    data_path = tmp_path / "lake"
    warehouse = Warehouse(database=":memory:", backend="ducklake", lake_catalog=catalog,
                          lake_data_path=f"{data_path}/")  # fmt: skip
    with warehouse.get_connection() as conn:
        conn.execute("CREATE TABLE t AS SELECT 'MTR-' || i AS meter_id FROM range(1000) r(i)")
        conn.execute("INSERT INTO t VALUES ('MTR-SMALL-INSERT')")  # inlined: below 10 rows
        conn.execute("DELETE FROM t WHERE meter_id IN ('MTR-517', 'MTR-SMALL-INSERT')")
        gone = {"MTR-517", "MTR-SMALL-INSERT"}
        assert parquet_hits(data_path, {"MTR-517"})
        assert catalog_hits(postgres, dbname, {"MTR-SMALL-INSERT"})
        warehouse.forget_history(conn)
        assert parquet_hits(data_path, gone) == {}
        assert catalog_hits(postgres, dbname, gone) == {}
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (999,)
        assert parquet_hits(data_path, {"MTR-516"})


def test_the_history_goes_in_two_steps_keeping_what_writers_since_need(tmp_path, postgres):
    """An erasure with writers at work: rewriting the deleted rows out of the files at once; then
    (once the runs at work have ended) the snapshots before the rewrite expired, the uncommitted
    files from before a time deleted (a dead writer's), those since kept and counted (a live
    writer's)."""
    data_path = tmp_path / "lake"
    warehouse = Warehouse(database=":memory:", backend="ducklake",
                          lake_catalog=postgres.lake_catalog(), lake_data_path=f"{data_path}/")  # fmt: skip
    with warehouse.get_connection() as conn:
        conn.execute("CREATE TABLE t AS SELECT 'MTR-' || i AS meter_id FROM range(1000) r(i)")
        conn.execute("DELETE FROM t WHERE meter_id = 'MTR-517'")
        rewritten = warehouse.rewrite_deleted_rows(conn)
        assert parquet_hits(data_path, {"MTR-517"}), "the old file, in older snapshots, is kept"
        conn.execute("INSERT INTO t VALUES ('MTR-AFTER')")  # a writer's commit since
        folder = data_path / "main" / "t"
        for name, age_min in (("dead", 120), ("live", 20)):
            conn.execute(f"COPY (SELECT 'MTR-{name}' AS meter_id) TO '{folder}/{name}.parquet'")
            os.utime(folder / f"{name}.parquet", (time.time() - 60 * age_min,) * 2)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
        assert warehouse.expire_history(conn, rewritten, since) == 1
        assert not (folder / "dead.parquet").exists() and (folder / "live.parquet").exists()
        snapshots = [s for (s,) in conn.execute("SELECT snapshot_id FROM ducklake_snapshots('lake')").fetchall()]  # fmt: skip
        assert min(snapshots) == rewritten and len(snapshots) == 2
        assert parquet_hits(data_path, {"MTR-517"}) == {}
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)
        warehouse.forget_history(conn)  # no writer at work
        assert not (folder / "live.parquet").exists()
