"""Table writes on a real DuckDB file: a table created and filled in one transaction reads back
whole inside it (the schema checks read there), with the types the Pandera model declares."""

from __future__ import annotations

import duckdb
import polars as pl

from dp_assets.exploitation.schema import MeterReading
from dp_assets.frames import polars_schema
from dp_assets.resources.tables import ensure_table, insert, row_count


def test_a_large_insert_into_a_new_table_reads_back_in_the_same_transaction(tmp_path):
    rows = 400_000  # one insert above DuckDB's optimistic-write size
    frame = pl.DataFrame(
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
