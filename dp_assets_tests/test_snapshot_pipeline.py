"""A snapshot pipeline declared in YAML, in a throw-away project of its own: generated member
records (one CSV file landed for training, another named as the validation file), a categorical
feature, segments, the two snapshot splits, monitoring that says what does not apply, a served
model answering one raw record, and a pipeline whose sandbox is empty skipped beside the others."""

from __future__ import annotations

import time

import numpy as np
import pytest
from dagster import AssetSelection

from dp_assets_tests.conftest import isolated_platform, score_served

pytestmark = pytest.mark.slow

PLANS = ("basic", "plus", "pro")
REGIONS = ("north", "south", "west")

SOURCE = """
import pandera.polars as pa
import polars as pl
from typing import Optional

from dp_assets.sources.base import FileContext, PhysicalFormat, Source, add_reasons, parse_failures, read_delimited
from dp_assets.sources.schema import Lineage

COLUMNS = ["member_id", "plan", "region", "age", "visits", "churned"]


class Member(Lineage):
    member_id: str = pa.Field(description="Member id")
    plan: str = pa.Field(description="Subscription plan")
    region: str = pa.Field(description="Region")
    age: int = pa.Field(description="Age, years")
    visits: int = pa.Field(description="Visits last month")
    churned: Optional[str] = pa.Field(nullable=True, description="yes or no; empty: not known yet")


def homogenize(raw: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    frame = raw.with_columns(
        age_n=pl.col("age").cast(pl.Int64, strict=False),
        visits_n=pl.col("visits").cast(pl.Int64, strict=False),
        churned_t=pl.when(pl.col("churned") != "").then(pl.col("churned")),
    )
    return frame.with_columns(
        add_reasons(parse_failures({"age_n": "age", "visits_n": "visits"}))
    ).select(
        pl.lit(ctx.sha256).alias("file_sha256"), "record_no", "member_id", "plan", "region",
        pl.col("age_n").alias("age"), pl.col("visits_n").alias("visits"),
        pl.col("churned_t").alias("churned"), "raw_record", "reject_reason",
    )


SOURCE = Source(
    name="members", description="Member records (CSV)", physical=PhysicalFormat(format="csv", delimiter=","),
    schema=Member, key=("member_id",), parse=lambda text: read_delimited(text, ",", COLUMNS),
    homogenize=homogenize, version="1",
)
"""

PIPELINE = """
description: Will a member leave?
task: classification
sandbox: SELECT * FROM formatted.members{where}
entity: {{column: member_id, pattern: "^M-[0-9]{{5}}$"}}
label: {{column: churned, positive: "yes"}}
segments: [region, plan]
categorical: [plan]
features: all
split: {split}
gate: {{min_improvement_vs_baseline: 0.2}}
lightgbm: {{objective: binary, learning_rate: 0.05, num_leaves: 7, min_data_in_leaf: 20}}
num_boost_round: 400
early_stopping_rounds: 30
"""


def members(rng: np.random.Generator, first: int, n: int, unknown: int = 0) -> str:
    """Churn rises with fewer visits and falls with the plan; region is noise."""
    lines = ["member_id,plan,region,age,visits,churned"]
    for i in range(n):
        plan, region = rng.choice(PLANS), rng.choice(REGIONS)
        age, visits = int(rng.integers(18, 80)), int(rng.poisson(4))
        logit = 1.2 - 0.6 * visits + {"basic": 1.0, "plus": 0.0, "pro": -1.5}[plan]
        churned = "yes" if rng.random() < 1 / (1 + np.exp(-logit)) else "no"
        lines.append(
            f"M-{first + i:05d},{plan},{region},{age},{visits},{'' if i < unknown else churned}"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp("snapshot")
    project = root / "members_project"
    (project / "sources").mkdir(parents=True)
    (project / "pipelines").mkdir()
    (project / "project.yaml").write_text("name: members_project\nowner: team:members\n")
    (project / "sources" / "members.py").write_text(SOURCE)
    pipelines = {
        "member_churn": ("", "{by: validation_file, file_pattern: 'members_validation*'}"),
        "member_churn_holdout": ("", "{by: holdout, fraction: 0.25, seed: 3}"),
        "member_churn_empty": (" WHERE plan = 'none'", "{by: holdout}"),
    }
    for name, (where, split) in pipelines.items():
        (project / "pipelines" / f"{name}.yaml").write_text(
            PIPELINE.format(where=where, split=split)
        )
    mp = pytest.MonkeyPatch()
    mp.setenv("DP_PROJECT", str(project))
    try:
        with isolated_platform(root) as platform:
            rng = np.random.default_rng(11)
            platform.drop("members", "members_2024.csv", members(rng, 0, 2400, unknown=60).encode())
            platform.drop("members", "members_validation.csv", members(rng, 50000, 800).encode())
            started = time.monotonic()
            # Its own chain only: the exploitation zone still builds the sample utility's views
            # whatever the project (until views are discovered per project).
            result = platform.materialize(
                AssetSelection.assets(
                    ["landing", "members"], ["formatted", "members"]
                ).required_multi_asset_neighbors()
                | AssetSelection.groups(*pipelines)
            )
            yield platform, result, time.monotonic() - started
    finally:
        mp.undo()


def metadata(result, asset: str) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_yaml_snapshot_pipeline_beats_its_prior_on_the_validation_file(snapshot):
    platform, result, seconds = snapshot
    assert result.success
    splits = dict(platform.sql("SELECT split, count(*) FROM member_churn.features GROUP BY 1"))
    assert splits == {"train": 2340, "validation": 800, "score": 60}
    first = platform.sql(
        "SELECT min(member_id) FROM member_churn.features WHERE split = 'validation'"
    )
    assert first == [("M-50000",)]
    evaluation = metadata(result, "member_churn/evaluation")
    auc, prior = evaluation["challenger roc_auc"], evaluation["baseline roc_auc"]
    print(f"member_churn: ROC AUC {auc:.4f} vs prior {prior:.4f} ({seconds:.0f} s for the project)")
    assert auc > 0.75 and prior == pytest.approx(0.5)
    model = metadata(result, "member_churn/model")
    assert model["categorical"] == "plan, region"  # declared, and a string column
    assert model["boosting rounds"] < 400  # early stopping on a share of the train split
    segments = set(platform.sql("SELECT DISTINCT segment_column FROM member_churn.evaluation"))
    assert segments == {("all",), ("region",), ("plan",)}
    assert platform.sql("SELECT count(*) FROM member_churn.predictions")[0][0] == 60


def test_the_holdout_split_is_stratified_and_seeded(snapshot):
    platform, result, _ = snapshot
    rows = platform.frame(
        "SELECT split, label, count(*) AS n FROM member_churn_holdout.features "
        "WHERE split != 'score' GROUP BY ALL ORDER BY ALL"
    )
    counts = {(r["split"], r["label"]): r["n"] for r in rows.iter_rows(named=True)}
    for label in (0.0, 1.0):
        share = counts[("validation", label)] / (
            counts[("validation", label)] + counts[("train", label)]
        )
        assert share == pytest.approx(0.25, abs=0.002)
    auc = metadata(result, "member_churn_holdout/evaluation")["challenger roc_auc"]
    print(f"member_churn_holdout: ROC AUC {auc:.4f}")
    assert auc > 0.75


def test_monitoring_says_what_does_not_apply(snapshot):
    platform, result, _ = snapshot
    live = metadata(result, "member_churn/live_accuracy")
    assert live["not applicable"].startswith("a snapshot's labels do not arrive")
    checks = {
        (e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()
    }
    assert not any(asset == "member_churn/live_accuracy" for asset, _ in checks)
    assert ("member_churn/features", "no_future_leakage") not in checks
    # Rows are scored: drift compares them with the training rows, categories included.
    drift = platform.frame("SELECT feature, recent_window FROM member_churn.drift")
    assert set(drift["feature"]) == {"plan", "region", "age", "visits"}
    assert drift["recent_window"].unique().to_list() == ["score split, 60 rows"]


def test_an_empty_sandbox_skips_its_pipeline_and_not_the_others(snapshot):
    _, result, _ = snapshot
    for step in ("sandbox", "features", "model", "evaluation", "champion", "predictions", "drift"):
        reason = metadata(result, f"member_churn_empty/{step}")["skipped"]
        assert "the sandbox is empty" in reason, reason
    checks = {e.asset_key.to_user_string() for e in result.get_asset_check_evaluations()}
    assert not any(asset.startswith("member_churn_empty/") for asset in checks)


def test_the_served_model_answers_a_raw_record(snapshot):
    platform, _, _ = snapshot
    tracking = platform.defs.resources["mlflow_tracking"]
    record = {"member_id": "M-99999", "plan": "basic", "region": "south", "age": 40, "visits": 0}
    (served,) = score_served(tracking.tracking_uri, "models:/member_churn@champion", [record])
    # A basic-plan member who never visits is among the likeliest to leave.
    stored = platform.sql("SELECT quantile_cont(prediction, 0.9) FROM member_churn.predictions")[0][
        0
    ]
    assert 0.0 < served < 1.0 and served > stored, (served, stored)


def test_the_registered_model_takes_a_record_missing_a_feature(snapshot):
    import mlflow.pyfunc
    import pandas as pd

    platform, _, _ = snapshot
    platform.defs.resources["mlflow_tracking"].client()  # points MLflow's registry at it
    served = mlflow.pyfunc.load_model("models:/member_churn@champion")
    record = {"member_id": "M-99999", "plan": "basic", "region": "south", "visits": 0}
    (without_age,) = served.predict(pd.DataFrame([record]))  # schema enforcement included
    (with_age,) = served.predict(pd.DataFrame([record | {"age": 40}]))
    assert 0.0 < without_age < 1.0 and 0.0 < with_age < 1.0
