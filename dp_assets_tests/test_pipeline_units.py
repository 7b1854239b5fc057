"""The factory's pure parts on small frames: categorical encoding, the spec's LightGBM defaults,
the holdout's digest, the early-stopping split, the raw-records model MLflow serves, the training
data's version, what makes two trainings the same, the gate on a reused champion and the UI
addresses evidence links point at."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import inspect
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import polars as pl
import pytest

from dp_assets.analysis import factory
from dp_assets.analysis.factory import (
    _training_code,
    _what_changed,
    category_levels,
    code_version,
    data_version,
    early_stopping_split,
    feature_matrix,
    training_identity,
    training_key,
)
from dp_assets.analysis.gate import already_champion
from dp_assets.analysis.served import encode
from dp_assets.analysis.spec import Entity, Gate, PipelineSpec, Split, load_pipeline
from dp_assets.analysis.timeseries import split_holdout
from dp_assets.definitions import build_defs
from dp_assets.settings import Settings


def snapshot_spec(**overrides) -> PipelineSpec:
    return PipelineSpec(
        name="adult", description="test", task="classification", sandbox_query="",
        sandbox_deps=(), build_examples=lambda frame: frame, entity=Entity("person"),
        gate=Gate(0.0), split=Split(by="holdout", fraction=0.25, seed=3),
        categorical=("education_num",), **overrides,
    )  # fmt: skip


def as_text(column: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in column.astype(object)]


def test_a_numeric_categorical_with_nulls_keeps_its_values():
    frame = pl.DataFrame({
        "person": ["a", "b", "c", "d"], "split": "train", "label": [1.0, 0.0, 0.0, 1.0],
        "education_num": [13, None, 9, 13], "age": [30, 40, None, 50],
    })  # fmt: skip
    spec = snapshot_spec()
    levels = category_levels(frame, ["education_num"])
    assert levels == {"education_num": ["13", "9"]}
    x = feature_matrix(frame, spec, levels)
    assert as_text(x["education_num"]) == ["13", None, "9", "13"]
    assert x["age"].tolist()[:2] == [30.0, 40.0] and np.isnan(x["age"][2])


def test_a_float_categorical_has_the_levels_a_served_integer_matches():
    frame = pl.DataFrame({"education_num": [13.0, None, 9.5]})
    assert category_levels(frame, ["education_num"]) == {"education_num": ["13", "9.5"]}


def test_encode_reads_served_json_numbers_as_the_training_levels():
    levels = {"education_num": ["13", "14", "9.5"]}
    records = pd.DataFrame({"education_num": [14, 14.0, None, "14", 9.5, 7]}, dtype=object)
    encoded = encode(records, ["education_num"], levels)
    assert as_text(encoded["education_num"]) == ["14", "14", None, "14", "9.5", None]
    doubles = encode(pd.DataFrame({"education_num": [14.0, np.nan]}), ["education_num"], levels)
    assert as_text(doubles["education_num"]) == ["14", None]


@pytest.mark.parametrize(
    "task, lightgbm, objective",
    [
        ("classification", "{learning_rate: 0.05}", "binary"),
        ("regression", "{learning_rate: 0.05}", "regression"),
        ("regression", "{objective: huber, learning_rate: 0.05}", "huber"),
    ],
)
def test_declared_lightgbm_parameters_keep_the_tasks_objective(tmp_path, task, lightgbm, objective):
    path = tmp_path / "adult.yaml"
    path.write_text(
        f"task: {task}\nsandbox: SELECT * FROM formatted.adult\nentity: person\n"
        f"label: income\nlightgbm: {lightgbm}\n"
    )
    spec = load_pipeline(path, project=None)
    assert spec.lgbm_params == {"objective": objective, "learning_rate": 0.05}


def digest_rank(ids: list[str], seed: int) -> list[str]:
    """The ids in the order of a stable digest of seed and id (blake2b, 8 bytes)."""
    return sorted(
        ids,
        key=lambda i: hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(),
    )


def test_the_holdout_is_chosen_by_a_stable_digest_not_the_polars_hash():
    ids = [f"P-{i:04d}" for i in range(200)]
    examples = pl.DataFrame({"person": ids, "label": [float(i % 2) for i in range(200)]})
    split = split_holdout(examples, "person", 0.2, 5, stratified=True)
    chosen = set(split.filter(pl.col("split") == "validation")["person"])
    expected = {
        i
        for label in ("0", "1")
        for i in digest_rank([i for i in ids if int(i[-1]) % 2 == int(label)], 5)[:20]
    }
    assert chosen == expected
    # The row order does not matter.
    shuffled = split_holdout(examples.reverse(), "person", 0.2, 5, stratified=True)
    assert set(shuffled.filter(pl.col("split") == "validation")["person"]) == chosen


def test_early_stopping_splits_a_snapshots_train_rows_stratified_and_seeded():
    spec = snapshot_spec()
    ids = [f"P-{i:04d}" for i in range(400)]
    train = pl.DataFrame({
        "person": ids, "split": "train", "label": [float(i % 4 == 0) for i in range(400)],
    })  # fmt: skip
    fit, stop = early_stopping_split(spec, train)
    assert fit.height + stop.height == 400
    assert set(fit["person"]).isdisjoint(stop["person"])
    # A share of each label value, the spec's fraction.
    assert stop.group_by("label").len().sort("label")["len"].to_list() == [75, 25]
    again, _ = early_stopping_split(spec, train.reverse())
    assert set(again["person"]) == set(fit["person"])


def test_early_stopping_splits_a_series_train_window_at_its_end_by_time():
    spec = PipelineSpec(
        name="load", description="test", task="regression", sandbox_query="", sandbox_deps=(),
        build_examples=lambda frame: frame, entity=Entity("zone"), gate=Gate(0.0), time="day",
        horizon_days=1, split=Split(by="time", validation_days=14),
    )  # fmt: skip
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(100)]
    train = pl.DataFrame({
        "zone": "east", "as_of": days, "split": "train", "label": [float(d) for d in range(100)],
    })  # fmt: skip
    fit, stop = early_stopping_split(spec, train)
    # The last 14 days stop (at most a fifth of the window); fit ends the horizon before them.
    assert stop["as_of"].min() == days[86] and stop["as_of"].max() == days[99]
    assert fit["as_of"].max() == days[85]
    assert fit.height == 86 and set(fit["split"]) == set(stop["split"]) == {"train"}


def test_the_served_model_takes_records_missing_a_feature_and_integer_categories(tmp_path):
    import lightgbm as lgb
    import mlflow
    import mlflow.pyfunc

    from dp_assets.analysis.factory import _log_raw_records_model

    rng = np.random.default_rng(1)
    n = 600
    education = rng.choice([9, 13, 14], n).tolist()
    education[::17] = [None] * len(education[::17])
    train = pl.DataFrame({
        "education_num": education, "age": rng.integers(18, 80, n),
        "workclass": rng.choice(["private", "state"], n),
    }).with_columns(label=(pl.col("education_num") == 14).cast(pl.Float64).fill_null(0.0))  # fmt: skip
    spec = snapshot_spec()
    features = ["education_num", "age", "workclass"]
    levels = category_levels(train, ["education_num", "workclass"])
    x = feature_matrix(train, spec, levels)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5, "seed": 1},
        lgb.Dataset(x, train["label"].to_numpy(), categorical_feature=list(levels)),
        30,
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("adult", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment):
        _log_raw_records_model(booster, train, features, levels, "adult", ["lightgbm"])
    served = mlflow.pyfunc.load_model("models:/adult/1")
    assert all(not c.required for c in served.metadata.get_input_schema().inputs)
    # Through the pyfunc's schema enforcement, as the scoring server calls it.
    (fourteen,) = served.predict(
        pd.DataFrame([{"education_num": 14, "age": 40, "workclass": "state"}])
    )
    (nine,) = served.predict(pd.DataFrame([{"education_num": 9, "age": 40, "workclass": "state"}]))
    (no_age,) = served.predict(pd.DataFrame([{"education_num": 14, "workclass": "state"}]))
    assert fourteen > 0.9 and nine < 0.1 and no_age > 0.9, (fourteen, nine, no_age)


def test_a_column_the_declaration_names_but_the_sandbox_lacks_is_named(tmp_path):
    import types

    from dp_assets.analysis.spec import PipelineError

    path = tmp_path / "pipelines" / "daily.yaml"
    path.parent.mkdir()
    path.write_text(
        "task: regression\nsandbox: SELECT * FROM exploitation.daily\nentity: region\n"
        "time: day\nlabel: energy_mw\nlags: [1, 7]\n"
    )
    spec = load_pipeline(path, types.SimpleNamespace(root=tmp_path, owner="team:x"))
    sandbox = pl.DataFrame({"region": ["r"], "day": [dt.date(2024, 1, 1)], "energy_mwh": [1.0]})
    with pytest.raises(PipelineError, match=r"daily.yaml: names energy_mw, which the sandbox "
                       r"does not return \(it returns region, day, energy_mwh\)"):  # fmt: skip
        spec.build_examples(sandbox)


def test_the_data_version_is_a_digest_of_the_training_rows_stable_across_releases():
    train = pl.DataFrame(
        {"as_of": [dt.date(2024, 1, 1), dt.date(2024, 1, 2)], "customer_id": ["a", "b"],
         "label": [1.5, None], "lag_1": [0.1, 2.0]}
    )  # fmt: skip
    version = data_version(train)
    assert version == data_version(train.clone())
    # A value, a null, a column's name or the rows' order: each is another version.
    assert version != data_version(train.with_columns(lag_1=pl.Series([0.1, 2.000001])))
    assert version != data_version(train.with_columns(label=pl.Series([1.5, 0.0])))
    assert version != data_version(train.rename({"lag_1": "lag_2"}))
    assert version != data_version(train.reverse())
    # Text, not a polars hash (which may change between releases): a fixed value.
    assert version == "416534a17ac99e753465"


def test_evidence_links_point_at_the_local_uis_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("DP_MLFLOW_UI_URL", raising=False)
    monkeypatch.delenv("DP_DAGSTER_UI_URL", raising=False)
    tracking = build_defs(Settings(tmp_path)).resources["mlflow_tracking"]
    assert tracking.run_url("3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert tracking.version_url("energy_forecast", "2") == (
        "http://127.0.0.1:5000/#/models/energy_forecast/versions/2"
    )
    assert tracking.dagster_run_url("r1") == "http://127.0.0.1:3000/runs/r1"

    monkeypatch.setenv("DP_MLFLOW_UI_URL", "https://mlflow.example.org/team/")
    monkeypatch.setenv("DP_DAGSTER_UI_URL", "https://dagster.example.org")
    tracking = build_defs(Settings(tmp_path)).resources["mlflow_tracking"]
    assert (
        tracking.run_url("3", "abc") == "https://mlflow.example.org/team/#/experiments/3/runs/abc"
    )
    assert tracking.artifact_url("abc", "evaluation/performance.png") == (
        "https://mlflow.example.org/team/get-artifact?path=evaluation/performance.png&run_uuid=abc"
    )
    assert tracking.dagster_run_url("r1") == "https://dagster.example.org/runs/r1"


def identity_of(spec: PipelineSpec, **overrides) -> dict[str, str]:
    given = dict(code="1-abc", data="d1", params={"seed": 7}, rounds=300,
                 features=["age", "education_num"], categorical=["education_num"])  # fmt: skip
    return training_identity(spec, **(given | overrides))


def test_the_training_key_changes_with_every_resolved_setting_that_shapes_the_model():
    spec = snapshot_spec()
    same = training_key(identity_of(spec))
    assert training_key(identity_of(snapshot_spec())) == same
    changed = {
        # The YAML default (50) lives in spec.py, not in the spec's file.
        "early stopping": identity_of(dataclasses.replace(spec, early_stopping_rounds=50)),
        "split fraction": identity_of(
            dataclasses.replace(spec, split=Split(by="holdout", fraction=0.3, seed=3))
        ),
        "split seed": identity_of(
            dataclasses.replace(spec, split=Split(by="holdout", fraction=0.25, seed=4))
        ),
        "horizon": identity_of(dataclasses.replace(spec, horizon_days=2)),
        "categorical": identity_of(spec, categorical=[]),
        "features": identity_of(spec, features=["education_num", "age"]),
        "params": identity_of(spec, params={"seed": 8}),
        "rounds": identity_of(spec, rounds=301),
        "data": identity_of(spec, data="d2"),
        "code": identity_of(spec, code="1-abd"),
    }
    for what, identity in changed.items():
        assert training_key(identity) != same, what


def test_the_code_version_and_the_training_code_follow_the_modules_training_runs_through(
    monkeypatch,
):
    spec = snapshot_spec()
    code, training = code_version(spec), _training_code()
    getsource = inspect.getsource

    def edited(*modules):
        names = {m.__name__ for m in modules}
        return lambda obj: getsource(obj) + ("\n# edited" if obj.__name__ in names else "")

    monkeypatch.setattr(inspect, "getsource", edited(factory))
    assert code_version(spec) != code, "the factory's changes are in the code version"
    for module in ("dp_assets.analysis.timeseries", "dp_assets.analysis.spec"):
        monkeypatch.setattr(inspect, "getsource", edited(sys.modules[module]))
        assert code_version(spec) == code and _training_code() != training, module


def test_what_changed_names_the_part_of_the_training_key_that_differs():
    identity = identity_of(snapshot_spec())
    tags = dict(factory.identity_tags(identity))
    champion = SimpleNamespace(version="3", tags=tags)
    assert _what_changed(None, identity) == "no champion yet"
    for part, tag in factory.IDENTITY_TAGS.items():
        champion.tags = tags | {tag: "other"}
        assert _what_changed(champion, identity) == f"{part} differs from the champion's (v3)"
    # A champion registered before a part was tagged: what differs cannot be named.
    champion.tags = {k: v for k, v in tags.items() if k != "lightgbm_version"}
    assert "LightGBM release" not in _what_changed(champion, identity)


def test_a_reused_champion_is_settled_only_while_it_still_clears_the_baseline():
    gate = Gate(min_improvement_vs_baseline=0.15)
    kept = already_champion("regression", gate, 3, challenger=0.80, baseline=1.0)
    assert not kept.promote and kept.settled and "already the champion" in kept.reason
    # A new validation window on which the same model no longer beats the baseline by the margin.
    worse = already_champion("regression", gate, 3, challenger=0.90, baseline=1.0)
    assert not worse.promote and not worse.settled
    assert "already the champion" in worse.reason and "baseline by 10.0%" in worse.reason
    assert not already_champion("regression", gate, 3, float("nan"), 1.0).settled
