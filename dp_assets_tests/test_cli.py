"""The commands a user and CI run, as subprocesses: dp sample-data, dagster asset materialize, dp summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dp_assets_tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


def test_dagster_asset_materialize_all_as_ci_would(tmp_path):
    env = cli_env(tmp_path)

    # Enough history for both analytical pipelines (a 30-day churn horizon, validation and training).
    out = run(
        [str(BIN / "dp"), "sample-data", "--days", "100", "--meters", "40", "--seed", "3"], env
    ).stdout
    assert "injected row problems" in out
    run([str(BIN / "dagster"), "asset", "materialize", "-m", "dp_assets", "--select", "*"], env)

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM exploitation.daily_consumption").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM landing.deliveries").fetchone()[0] > 0
        for pipeline in ("energy_forecast", "customer_churn"):
            assert conn.execute(f"SELECT count(*) FROM {pipeline}.predictions").fetchone()[0] > 0

    summary = run([str(BIN / "dp"), "summary"], env).stdout
    assert "exploitation.daily_consumption" in summary and "Quarantined files" in summary
    assert "empty file (0 bytes)" in summary and "duckdb " in summary

    # The daemon's runs carry the same instance config: the run queue and the warehouse pool.
    validate = run([str(BIN / "dagster"), "definitions", "validate", "-m", "dp_assets"], env)
    assert "Validation successful" in validate.stdout + validate.stderr


def test_every_command_says_what_it_does_with_an_example(capsys):
    import argparse

    from dp_assets.cli import build_parser, main

    (subcommands,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    assert {"summary", "checks", "quarantine", "report", "erase"} <= set(subcommands.choices)
    for name in subcommands.choices:
        if name == "sample-data":  # the serving project's own options and help
            continue
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        purpose, example = text.split("\n\n")[1:3]
        assert purpose.endswith(".") and "\n" not in purpose, (name, purpose)
        assert example.startswith("example:\n  ") and "dp " in example, (name, example)


def test_sample_data_is_deterministic_per_seed(tmp_path):
    from dp_projects.utility.sample_data.generator import SampleParams, generate

    params = SampleParams(days=3, meters=5, seed=5)
    generate(tmp_path / "a", params)
    generate(tmp_path / "b", params)
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert files
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (
            tmp_path / "b" / relative
        ).read_bytes(), relative


def test_a_year_of_sample_weather_stays_near_the_seasonal_norm():
    """Each region's daily mean stays within 14 C of its seasonal norm over a year, whatever the
    seed: a forecast validated on a year's last days must not meet a climate it never saw."""
    import datetime as dt

    import numpy as np
    import polars as pl

    from dp_projects.utility.sample_data.generator import make_weather, seasonal_norm_c

    for seed in range(30):
        weather = make_weather(np.random.default_rng(seed), dt.date(2024, 1, 15), 365)
        # The day cycle averages out over a UTC day's 24 hours; what is left is norm + departure.
        daily = weather.group_by("region", pl.col("utc").dt.date().alias("day")).agg(
            pl.col("temp_c").mean(), pl.col("utc").dt.ordinal_day().first().alias("doy")
        )
        for (region,), days in daily.group_by("region"):
            departure = days["temp_c"].to_numpy() - seasonal_norm_c(days["doy"].to_numpy(), region)
            assert np.abs(departure).max() < 14, (seed, region, departure.min(), departure.max())


def test_parts_name_their_files_and_manifest():
    from dp_projects.utility.sample_data.generator import part_name

    assert part_name("sample_data_manifest.json", 0) == "sample_data_manifest.json"
    assert part_name("sample_data_manifest.json", 2) == "sample_data_manifest_p2.json"
    assert part_name("readings_2024-01-15_p2.csv", 2) == "readings_2024-01-15_p2.csv"
