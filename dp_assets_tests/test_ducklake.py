"""The warehouse as a DuckLake on a real PostgreSQL catalog (conftest's ``postgres``): the same
assets, unchanged, write Parquet files under the data dir and a catalog in PostgreSQL."""

from __future__ import annotations

import importlib.util

import pytest
from dagster import AssetSelection

from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_assets.resources import Warehouse
from dp_assets_tests.conftest import BACKBONE, SOURCES, WORLD, isolated_platform


def test_landing_and_formatted_materialize_on_ducklake(tmp_path, postgres):
    with isolated_platform(tmp_path, postgres.lake_catalog()) as platform:
        assert platform.warehouse.backend == "ducklake"
        generate(platform.settings.data_dir, SampleParams(days=4, meters=6, seed=8))
        result = platform.materialize(AssetSelection.groups("landing", "formatted"))
        assert result.success

        assert platform.sql("SELECT current_database()") == [("lake",)]
        for source in SOURCES:
            (rows,) = platform.sql(f"SELECT count(*) FROM formatted.{source}")[0]
            assert rows > 0, source
        parquet = list((platform.settings.data_dir / "lake").rglob("*.parquet"))
        assert parquet, "the lake's tables are Parquet files under the data path"
        assert not platform.settings.warehouse.exists(), "no DuckDB file on the lake backend"


# Columns that record when a run did something (the wall clock), which two builds cannot share;
# every other column of every table must match.
WHEN = {
    "_platform.integrated_files": {"processed_at", "integrated_at"},
    "_platform.watermarks": {"watermark_at"},
    "energy_forecast.drift": {"computed_at"},
    "energy_forecast.predictions": {"predicted_at"},
    "energy_forecast.promotions": {"decided_at"},
    "formatted.file_outcomes": {"processed_at"},
    "landing.deliveries": {"inbox_changed_ns", "landed_at"},
}


@pytest.mark.slow
def test_the_backbone_and_a_pipeline_on_ducklake_equal_the_duckdb_file_row_for_row(
    tmp_path, postgres
):
    selection = BACKBONE | AssetSelection.groups("energy_forecast")
    with isolated_platform(tmp_path / "file", lake_catalog="") as file:
        assert file.warehouse.backend == "duckdb"
        generate(file.settings.data_dir, WORLD)
        assert file.materialize(selection).success
    with isolated_platform(tmp_path / "lake", postgres.lake_catalog()) as lake:
        generate(lake.settings.data_dir, WORLD)
        assert lake.materialize(selection).success
        with lake.warehouse.get_connection() as conn:
            # Both in one session: the lake as `lake`, the file beside it, read-only.
            conn.execute(f"ATTACH '{file.settings.warehouse}' AS file (READ_ONLY)")

            def tables(database: str) -> set[str]:
                return {
                    name
                    for (name,) in conn.execute(
                        "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
                        "WHERE database_name = ?",
                        [database],
                    ).fetchall()
                }

            assert tables("lake") == tables("file")
            assert {"exploitation.meter_readings", "energy_forecast.features"} <= tables("lake")
            rows = 0
            for table in sorted(tables("file")):
                columns = conn.execute(f"DESCRIBE file.{table}").fetchall()
                # Names and types (DuckLake reports a NULL default where DuckDB reports none).
                described = conn.execute(f"DESCRIBE lake.{table}").fetchall()
                assert [c[:2] for c in described] == [c[:2] for c in columns], table
                kept = ", ".join(f'"{c[0]}"' for c in columns if c[0] not in WHEN.get(table, ()))
                # Order-independent and duplicates counted: EXCEPT ALL both ways is empty.
                for a, b in (("lake", "file"), ("file", "lake")):
                    (extra,) = conn.execute(
                        f"SELECT count(*) FROM (SELECT {kept} FROM {a}.{table} "
                        f"EXCEPT ALL SELECT {kept} FROM {b}.{table})"
                    ).fetchone()
                    assert extra == 0, f"{table}: {extra} rows in {a} not in {b}"
                rows += conn.execute(f"SELECT count(*) FROM lake.{table}").fetchone()[0]
            assert rows > 100_000, rows


def test_a_data_path_on_object_storage_names_the_extension_it_needs(tmp_path):
    """Without the [object-storage] extra, an s3:// data path fails at once, saying what to install
    (not later, on the first write, or by trying to download the extension)."""
    if importlib.util.find_spec("duckdb_extension_httpfs"):
        pytest.skip("the httpfs extension's wheel is installed here")
    warehouse = Warehouse(database=":memory:", backend="ducklake",
                          lake_catalog=str(tmp_path / "metadata.ducklake"),
                          lake_data_path="s3://bucket/lake/")  # fmt: skip
    with pytest.raises(RuntimeError, match=r"pip install 'duckdb-extension-httpfs==1\.5\.5'"):
        with warehouse.get_connection():
            pass
