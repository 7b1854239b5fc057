"""The warehouse as a DuckLake on a real PostgreSQL catalog (conftest's ``postgres``): the same
assets, unchanged, write Parquet files under the data dir and a catalog in PostgreSQL."""

from __future__ import annotations

from dagster import AssetSelection

from dp_projects.utility.sample_data.generator import SampleParams, generate
from dp_assets_tests.conftest import SOURCES, isolated_platform


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
