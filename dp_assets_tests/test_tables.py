"""Table writes on a real DuckDB file: a table created and filled in one transaction reads back
whole inside it (the schema checks read there), with the types the Pandera model declares; the
check of stored rows finds bad values and duplicated keys, also across validation batches; a
rebuilt table is written by its changed rows only, and those are what its check selects."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from dp_assets import metadata
from dp_projects.utility.views._schema import MeterReading
from dp_assets.frames import polars_schema
from dp_assets.resources.tables import ensure_table, insert, replace_changed_rows, row_count


def readings(rows: int) -> pl.DataFrame:
    """``rows`` valid half-hourly readings of one meter."""
    return pl.DataFrame(
        {
            "meter_id": ["MTR-000001"] * rows,
            "reading_start": pl.datetime_range(
                pl.datetime(2024, 1, 1, time_zone="UTC"),
                pl.datetime(2024, 1, 1, time_zone="UTC") + pl.duration(minutes=30 * (rows - 1)),
                "30m",
                eager=True,
            ),
            "kwh": [0.25] * rows,
            "vendor": ["vendor_a"] * rows,
            "file_sha256": ["a" * 64] * rows,
        },
        schema=polars_schema(MeterReading),
    )


def test_a_large_insert_into_a_new_table_reads_back_in_the_same_transaction(tmp_path):
    rows = 400_000  # one insert above DuckDB's optimistic-write size
    frame = readings(rows)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("SET TimeZone = 'UTC'")  # as the Warehouse resource does
        conn.execute("BEGIN TRANSACTION")
        ensure_table(conn, "exploitation.meter_readings", MeterReading)
        insert(conn, "exploitation.meter_readings", frame)
        assert row_count(conn, "exploitation.meter_readings") == rows
        stored = conn.execute("SELECT * FROM exploitation.meter_readings").pl()
        conn.execute("COMMIT")
    assert stored.schema == frame.schema
    MeterReading.validate(stored)


def test_the_stored_rows_check_names_bad_values_and_duplicated_keys_across_batches(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(metadata, "VALIDATE_ROWS", 4)  # 10 rows: three batches
    frame = readings(10)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        ensure_table(conn, "exploitation.meter_readings", MeterReading)
        insert(conn, "exploitation.meter_readings", frame)
        selected = "SELECT t.* FROM exploitation.meter_readings t"

        check, _ = metadata.check_stored(conn, selected, MeterReading)
        assert check.passed and check.metadata["rows validated"].value == 10

        # The first reading again in the last batch, and a negative reading in the second.
        insert(conn, "exploitation.meter_readings", frame.head(1))
        conn.execute(
            "UPDATE exploitation.meter_readings SET kwh = -1 WHERE reading_start = ?",
            [frame["reading_start"][5]],
        )
        check, _ = metadata.check_stored(conn, selected, MeterReading)
    assert not check.passed and check.metadata["failures"].value == 2
    failures = check.metadata["first failures"].value
    assert "unique (meter_id, reading_start)" in failures
    assert "MTR-000001, 2024-01-01 00:00:00+00 (2 rows)" in failures
    assert "greater_than_or_equal_to(0" in failures and "-1.0" in failures


def test_a_rebuilt_table_is_written_by_its_changed_rows(tmp_path):
    table = "analysis.examples"
    before = pl.DataFrame(
        {
            "id": [1, 2, 3, 4, 5],
            "day": [dt.date(2024, 1, d) for d in (1, 1, 2, 2, 3)],
            "value": [1.0, float("nan"), None, 4.0, 5.0],
            "tag": ["a", None, "c", "d", "e"],
        }
    )
    # 1, 2 (NaN and NULL) and 3 stay; 4 changes its tag, 5 its day (part of the key); 6 is new.
    after = pl.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "day": [dt.date(2024, 1, d) for d in (1, 1, 2, 2, 4, 4)],
            "value": [1.0, float("nan"), None, 4.0, 5.0, 6.0],
            "tag": ["a", None, "c", "D", "e", "f"],
        }
    )
    key = ["id", "day"]

    def stored(where: str = "") -> pl.DataFrame:
        return conn.execute(f"SELECT t.* FROM {table} t {where}").pl().sort(key)

    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("CREATE SCHEMA analysis")
        assert replace_changed_rows(conn, table, before, key, "v1") == ""  # new: written whole
        assert stored().equals(before, null_equal=True)

        written = replace_changed_rows(conn, table, after, key, "v1")
        assert stored().equals(after, null_equal=True)
        assert stored(written).equals(after.filter(pl.col("id") >= 4), null_equal=True)

        assert stored(replace_changed_rows(conn, table, after, key, "v1")).is_empty()  # no change

        # Another version of the code (its checks may have changed): every row is written again.
        assert replace_changed_rows(conn, table, after, key, "v2") == ""
        assert stored(replace_changed_rows(conn, table, after, key, "v2")).is_empty()

        # Another column: the table is rebuilt whole, with it.
        wider = after.with_columns(extra=pl.lit(1))
        assert replace_changed_rows(conn, table, wider, key, "v2") == ""
        assert stored().equals(wider, null_equal=True)
