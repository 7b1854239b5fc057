"""The README's "Bring your own data" examples on the real public files in ../shared/data: each a
project of its own (dp_assets_tests/projects/<name>), served alone, from the inbox to a model
that beats its baseline by the margin the guide promises.

Skipped where ../shared/data is absent (a fresh clone): the platform's own tests use generated data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import AssetSelection

from dp_assets_tests.conftest import REPO, isolated_platform, score_served

pytestmark = pytest.mark.slow
PROJECTS = Path(__file__).parent / "projects"


def shared_data() -> Path:
    """../shared/data beside the repository (a worktree's is beside the main checkout)."""
    for root in (REPO, *REPO.parents):
        if (root.parent / "shared" / "data").is_dir():
            return root.parent / "shared" / "data"
    pytest.skip("../shared/data (the real public datasets) is absent: worked examples not run")


@pytest.fixture(scope="module")
def served(tmp_path_factory, request):
    """Serve the example project alone, drop its real files into the inbox, materialize `*`."""
    name, files = request.param
    data = shared_data()
    mp = pytest.MonkeyPatch()
    mp.setenv("DP_PROJECT", str(PROJECTS / name))
    try:
        with isolated_platform(tmp_path_factory.mktemp(name)) as platform:
            for source, path in files:
                target = platform.settings.inbox / source / Path(path).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data / path, target)
            result = platform.materialize(AssetSelection.all())
            yield platform, result
    finally:
        mp.undo()


def metric(platform, pipeline: str, model: str, name: str, segment_column: str = "all") -> dict:
    rows = platform.sql(
        f"SELECT segment, value FROM {pipeline}.evaluation WHERE model = ? AND metric = ? "
        "AND segment_column = ?",
        [model, name, segment_column],
    )
    return dict(rows)


def failed_checks(result) -> list[str]:
    """The checks that did not pass, each with its reason: a walkthrough's own files leave none."""
    return [
        f"{e.asset_key.to_user_string()}:{e.check_name}: {e.description}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]


PJM = ("pjm", [("pjm_load", "pjm_hourly/PJME_hourly.csv")])
ADULT = ("adult", [("adult", "uci_adult/adult.data"), ("adult", "uci_adult/adult.test")])


@pytest.mark.parametrize("served", [PJM], indirect=True, ids=["pjm"])
def test_pjm_daily_forecast_beats_the_seasonal_naive_by_15_percent(served):
    platform, result = served
    assert result.success and failed_checks(result) == []
    assert platform.sql("SELECT count(*) FROM formatted.pjm_load")[0][0] == 145_366
    assert platform.sql("SELECT count(*) FROM formatted.pjm_load_rejects")[0][0] == 0
    days, complete = platform.sql(
        "SELECT count(*), count(*) FILTER (hours >= 23) FROM exploitation.pjm_daily"
    )[0]
    assert days > 6000 and complete > days - 20
    model = metric(platform, "pjm_forecast", "challenger", "mae")["all"]
    baseline = metric(platform, "pjm_forecast", "baseline", "mae")["all"]
    print(f"PJM daily MAE {model:,.0f} MWh vs seasonal naive {baseline:,.0f}: "
          f"{1 - model / baseline:.1%} better")  # fmt: skip
    assert model <= 0.85 * baseline
    (first, last), = platform.sql(
        "SELECT min(as_of), max(as_of) FROM pjm_forecast.features WHERE split = 'validation'"
    )  # fmt: skip
    assert (last - first).days + 1 == 56  # the most recent 8 weeks


@pytest.mark.parametrize("served", [ADULT], indirect=True, ids=["adult"])
def test_adult_income_snapshot_reaches_auc_090_and_serves_a_raw_record(served):
    platform, result = served
    assert result.success and failed_checks(result) == []
    counts = dict(platform.sql(
        "SELECT d.original_name, count(*) FROM formatted.adult a "
        "JOIN landing.deliveries d ON d.sha256 = a.file_sha256 GROUP BY ALL"
    ))  # fmt: skip
    assert counts == {"adult.data": 32_560, "adult.test": 16_281}
    assert platform.sql("SELECT DISTINCT income FROM formatted.adult ORDER BY 1") == [
        ("<=50K",),
        (">50K",),
    ]
    auc = metric(platform, "income", "challenger", "roc_auc")
    print(f"Adult ROC AUC {auc['all']:.4f} on adult.test")
    assert auc["all"] >= 0.90
    by_sex = metric(platform, "income", "challenger", "roc_auc", "sex")
    by_race = metric(platform, "income", "challenger", "roc_auc", "race")
    assert set(by_sex) == {"Male", "Female"} and len(by_race) == 5
    record = {
        "age": 52, "workclass": "Self-emp-inc", "education": "Masters", "education_num": 14,
        "marital_status": "Married-civ-spouse", "occupation": "Exec-managerial",
        "relationship": "Husband", "race": "White", "sex": "Male", "capital_gain": 15024,
        "capital_loss": 0, "hours_per_week": 50, "native_country": "United-States",
    }  # fmt: skip
    tracking = platform.defs.resources["mlflow_tracking"]
    (probability,) = score_served(tracking.tracking_uri, "models:/income@champion", [record])
    assert 0.5 < probability < 1.0, probability
