"""The report people read: ``[reporting, report]`` materialized on generated data writes a page
with date-axis plots, the serving champion's model plots and readable numbers; it follows what it
shows (a retrain's champion is on the page written in the same run); and headless Chromium
renders it to a screenshot that is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, AssetSelection

from dp_assets.automation import TRAINING_STEPS
from dp_assets.operations.report import report_path
from dp_assets.operations.report_asset import REPORT_KEY

pytestmark = pytest.mark.slow
ENERGY_TRAINING = [["energy_forecast", s] for s in TRAINING_STEPS]


def latest_metadata(platform, key: AssetKey) -> dict:
    event = platform.instance.get_latest_materialization_event(key)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_the_report_shows_time_axes_model_plots_and_readable_numbers(world):
    platform, result = world
    assert REPORT_KEY in {e.asset_key for e in result.get_asset_materialization_events()}
    metadata = latest_metadata(platform, REPORT_KEY)
    path = Path(metadata["path"])
    assert path == report_path(platform.settings) and str(path) in metadata["summary"]
    page = path.read_text()
    titles = re.findall(r"<img alt='([^']*)'", page)
    # Time axes: rejects per delivery day, each time pipeline's accuracy per day.
    assert "Rejected records per delivery day" in titles
    assert {"energy_forecast: mae per day", "customer_churn: roc_auc per day"} <= set(titles)
    # Model plots of the version that serves, from its MLflow run.
    for pipeline in ("energy_forecast", "customer_churn"):
        version = metadata[f"{pipeline} champion"]
        assert version.startswith("v") and f"Serving: <b>{pipeline} {version}</b>" in page
        assert {f"Performance of {version}", f"Feature importance of {version}"} <= set(titles)
    # Drift: a PSI plot where features were measured; this world's 40 customers are too few for a
    # PSI (150 needed), and the page says so beside each feature's status.
    drift = page.split("<h2>energy_forecast</h2>")[1].split("<h3>Drift")[1].split("<h3>")[0]
    assert any(t.startswith("energy_forecast: PSI by feature") for t in titles) or (
        "No feature had enough data for a PSI" in drift and "not evaluated" in drift
    )
    assert "has no " not in page, "every champion's run holds its plots"
    # Readable numbers: thousands separated, rates as percentages, no scientific notation.
    cells = re.findall(r"<td class=num>([^<]*)</td>", page)
    assert cells and not [c for c in cells if re.search(r"\de[+-]\d", c)]
    assert any(re.fullmatch(r"\d{1,3}(,\d{3})+", c) for c in cells), "thousands separated"
    assert any(re.fullmatch(r"\d+\.\d\d%", c) for c in cells), "rates as percentages"
    assert "e+0" not in page.split("<img")[0] and "UTC" in page


def test_the_report_follows_what_it_shows(world):
    platform, _ = world
    graph = platform.defs.resolve_asset_graph()
    node = graph.get(REPORT_KEY)
    shown = {AssetKey(["energy_forecast", s]) for s in ("champion", "drift")}
    assert shown | {AssetKey(["reporting", "model_accuracy"])} <= node.parent_keys
    assert node.automation_condition is not None, "the reporting group's policy makes it follow"
    # A retrain and the report in one run, as automation runs it after a promotion: the page
    # names the version the champion alias points to now, not the one before.
    run = platform.materialize(AssetSelection.assets(*ENERGY_TRAINING, REPORT_KEY))
    assert run.success
    tracking = platform.defs.resources["mlflow_tracking"]
    serving = tracking.model_version("energy_forecast", "champion").version
    metadata = latest_metadata(platform, REPORT_KEY)
    assert metadata["energy_forecast champion"] == f"v{serving}"
    assert f"Serving: <b>energy_forecast v{serving}</b>" in Path(metadata["path"]).read_text()


def test_dp_report_writes_the_same_page(world, tmp_path):
    from dp_assets.operations.report import write_report

    platform, _ = world
    page = write_report(platform.settings, tmp_path / "report.html").read_text()
    for heading in ("Data quality", "energy_forecast", "customer_churn", "Business KPIs"):
        assert f"<h2>{heading}</h2>" in page


def test_headless_chromium_renders_the_report(world, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: `make test` installs Debian's chromium package")
    from PIL import Image

    platform, _ = world
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1200,3000",
         f"--screenshot={screenshot}", report_path(platform.settings).as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    drawn = pixels < 200  # text, lines and bars, not the white page
    assert drawn.mean() > 0.02, f"the page looks blank: {drawn.mean():.1%} of pixels drawn"
    # Content runs down the page (plots and tables), not only a heading at the top.
    assert drawn[1500:].mean() > 0.01


def test_drift_over_time_shows_the_features_measured_not_those_never_evaluated():
    import datetime as dt
    from types import SimpleNamespace

    import polars as pl

    from dp_assets.operations.report import _drift

    spec = SimpleNamespace(name="p", drift_threshold=0.25)
    times = [dt.datetime(2024, 5, d, tzinfo=dt.UTC) for d in (1, 8)]
    drift = pl.DataFrame({
        "computed_at": [t for t in times for _ in range(3)],
        "feature": ["moved", "quiet", "never"] * 2,
        "psi": [0.5, 0.01, None, 0.7, 0.02, None],
        "drifted": [True, False, False, True, False, False],
        "status": ["drifted", "stable", "not evaluated"] * 2,
    })  # fmt: skip
    section = _drift(spec, drift)
    assert "p: PSI over time, 2 most moved features" in section
    # Measured once or never: no plot over time, and a window with no PSI says why.
    once = _drift(spec, drift.filter(pl.col("computed_at") == times[0]))
    assert "over time" not in once
    nothing = _drift(spec, drift.filter(pl.col("feature") == "never"))
    assert "over time" not in nothing and "No feature had enough data for a PSI" in nothing


def test_step_durations_count_a_step_once_whatever_assets_it_materialized():
    import datetime as dt

    import polars as pl

    from dp_assets.operations.report import step_durations

    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    health = pl.DataFrame({
        "asset": ["formatted/a", "formatted/a_rejects", "landing/x", "landing/y", "erased"],
        "run_id": ["r1"] * 5,
        "step": ["formatted_a", "formatted_a", "landing", "landing", None],
        "materialized_at": [at] * 5,
        "step_seconds": [2.0, 2.0, 3.0, 3.0, None],
    })  # fmt: skip
    steps = step_durations(health).sort("step")
    assert steps.select("step", "step_seconds").rows() == [("formatted_a", 2.0), ("landing", 3.0)]
