"""The pipeline factory: one ``PipelineSpec`` in, the chain of assets out.

``[<p>, sandbox] -> features -> model -> evaluation -> champion -> predictions``, then ``drift`` and
``live_accuracy`` (``monitoring_assets.py``), all in the group and DuckDB schema named after the
pipeline. Models are LightGBM, tracked and registered in MLflow under
the pipeline's name: ``model`` registers a new version as ``challenger``; ``evaluation`` scores it,
the naive baseline and the current ``champion`` on the same validation window; ``champion`` moves
the alias only when the gate passes; ``predictions`` scores the latest day with the champion.

The registry grows only when something changed: ``model`` keys each training by its data
version (``data_version``: a digest of the training rows it reads), the code version, the
training code, the LightGBM release, the parameters and the spec's resolved training settings
(``training_identity``), and reuses the champion's or the current challenger's version when the
key is theirs, training nothing. A challenger that ties the champion is not promoted (``gate``).

The gate is a blocking check: it fails with ERROR severity (stopping predictions) only when no
champion exists at all, and with WARN when a challenger doing worse leaves the previous champion
in place, or when the champion, reused as the challenger, no longer clears the baseline margin
on the current validation window, so scoring goes on with the model that earned it; keeping the
champion because the challenger is it (and still clears that margin), or ties it, passes. Every
check result carries a one-line description.

Evidence links both ways: the steps' metadata link to the MLflow run and registered version
(``Settings.mlflow_ui_url``), the MLflow run and version link back to the Dagster run that trained
them (``Settings.dagster_ui_url``; the run's description and the ``dagster/run_url`` tag). The
evaluation plots are markdown under 1,000 characters whose images MLflow's UI serves: Dagster's
asset page renders such markdown inline and hides a longer one behind "[Show Markdown]", which a
PNG embedded as base64 always is (``plots (embedded)`` keeps that copy for when MLflow's UI is
not running).

A pipeline whose sandbox is empty (or whose inputs were skipped) is skipped, not failed: each step
materializes with ``skipped: <why>`` metadata and reports no check, and the steps after it skip
too, so one pipeline without data never fails the others.
"""

import dataclasses
import datetime as dt
import hashlib
import inspect
import json
import sys
import tempfile
from base64 import b64encode
from pathlib import Path

import numpy as np
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    AssetSpec,
    MetadataValue,
    multi_asset,
)

from dp_assets.analysis.gate import already_champion, decide
from dp_assets.analysis.leakage import SAMPLE_ENTITIES, future_leaks
from dp_assets.analysis.metrics import PRIMARY, by_segment, improvement
from dp_assets.analysis.monitoring import segment_gaps
from dp_assets.analysis.monitoring_assets import build_monitoring_assets
from dp_assets.analysis.schema import EvaluationRow, Promotion
from dp_assets.analysis.spec import LINEAGE_COLUMNS, PipelineSpec
from dp_assets.analysis.timeseries import (
    NotEnoughHistory,
    split_by_file,
    split_holdout,
    split_by_time,
)
from dp_assets.frames import polars_schema
from dp_assets.frozen import import_frozen
from dp_assets.metadata import (
    checks_of_subsettable,
    WAREHOUSE_POOL,
    column_lineage,
    markdown,
    one_line,
    roll_back_unless_passed,
    spec_metadata,
    stored_table_results,
    schema_check_spec,
)
from dp_assets.resources import MlflowTracking, Warehouse
from dp_assets.resources.tables import (
    ensure_table,
    insert,
    no_input_yet,
    replace_changed_rows,
    replace_table_with,
    replace_where,
)

FACTORY_VERSION = "1"
CHALLENGER, CHAMPION = "challenger", "champion"
# Artifacts of a version's MLflow run that the report reads back.
EVALUATION_FOLDER = "evaluation"  # the evaluation step's plots, <name>.png, and segments.csv
IMPORTANCE_JSON = "feature_importance.json"  # the model step's: feature -> gain


class TrainConfig(Config):
    seed: int = 7
    """Random seed of LightGBM: same data, code and seed give the same model and metrics."""
    num_boost_round: int = 0
    """Boosting rounds; 0 uses the pipeline spec's."""


def _sources(*modules) -> str:
    return "".join(inspect.getsource(module) for module in modules)


def code_version(spec: PipelineSpec) -> str:
    """Changes whenever the factory (this module), the module building the examples or the
    spec's file changes."""
    source = _sources(sys.modules[__name__], sys.modules[spec.build_examples.__module__])
    if spec.source_file and Path(spec.source_file).is_file():
        source += Path(spec.source_file).read_text(encoding="utf-8")
    return f"{FACTORY_VERSION}-{hashlib.sha256(source.encode()).hexdigest()[:10]}"


DATA_VERSION_SLICE = 50_000  # rows per slice of text hashed: bounded memory on a large train split


def data_version(train: pl.DataFrame) -> str:
    """The version of the data a model is trained on: a SHA-256 digest of the training rows as
    the model step reads them (in key order), as CSV text with their column names and types.

    Text, not ``DataFrame.hash_rows``: polars does not keep its hash stable between releases,
    and an upgrade would make every champion look trained on other data. Nulls are written
    ``\\N`` so that they differ from an empty string. Everything the model learns from (features,
    label, their order) is in it; the validation and score rows are not, so new days that only
    reach validation re-evaluate the same version instead of registering another."""
    digest = hashlib.sha256(json.dumps([[c, str(t)] for c, t in train.schema.items()]).encode())
    for start in range(0, max(train.height, 1), DATA_VERSION_SLICE):
        part = train.slice(start, DATA_VERSION_SLICE)
        digest.update(part.write_csv(include_header=False, null_value="\\N").encode())
    return digest.hexdigest()[:20]


# The modules training runs through beyond the code version: the encoding, the splits early
# stopping cuts again, and the spec's defaults and parameters.
TRAINING_MODULES = (
    "dp_assets.analysis.served",
    "dp_assets.analysis.timeseries",
    "dp_assets.analysis.spec",
)


def _training_code() -> str:
    """A digest of ``TRAINING_MODULES``, whose changes change a trained model too."""
    import importlib

    source = _sources(*(importlib.import_module(name) for name in TRAINING_MODULES))
    return hashlib.sha256(source.encode()).hexdigest()[:10]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


# Each part of a training's identity, and the tag of the registered version that records it.
IDENTITY_TAGS = {
    "data version": "data_version",
    "code version": "dagster/code_version",
    "training code": "training_code",
    "LightGBM release": "lightgbm_version",
    "training parameters": "training_params",
    "training settings": "training_settings",
}


def training_identity(
    spec: PipelineSpec,
    code: str,
    data: str,
    params: dict,
    rounds: int,
    features: list[str],
    categorical: list[str],
) -> dict[str, str]:
    """What makes two trainings the same, by part (``IDENTITY_TAGS``): the code and data
    versions, the training code, the LightGBM release, the parameters and rounds, and the spec's
    settings as resolved (defaults included) that shape the model: early stopping, the split
    (early stopping cuts the train rows again with it), the horizon, the features in order and
    the categorical ones."""
    import lightgbm as lgb

    settings = {
        "early_stopping_rounds": spec.early_stopping_rounds,
        "split": dataclasses.asdict(spec.split),
        "horizon_days": spec.horizon_days,
        "features": features,
        "categorical": categorical,
    }
    return {
        "data version": data,
        "code version": code,
        "training code": _training_code(),
        "LightGBM release": lgb.__version__,
        "training parameters": _digest({"params": params, "rounds": rounds}),
        "training settings": _digest(settings),
    }


def training_key(identity: dict[str, str]) -> str:
    """Same key, same model: the registry needs no new version."""
    return _digest(identity)


def identity_tags(identity: dict[str, str]) -> dict[str, str]:
    """The tags a registered version records its identity with, part by part."""
    return {IDENTITY_TAGS[part]: value for part, value in identity.items()}


def reusable_version(tracking: MlflowTracking, name: str, key: str):
    """The champion's or the challenger's version (in that order) trained with ``key`` and not
    marked for retraining by an erasure, or None."""
    from dp_assets.governance.erasure_job import RETRAIN_TAG

    for alias in (CHAMPION, CHALLENGER):
        found = tracking.model_version(name, alias)
        if found and found.tags.get("training_key") == key and RETRAIN_TAG not in found.tags:
            return found, alias
    return None, None


def _links(tracking: MlflowTracking, name: str, version) -> dict:
    """Metadata linking a step to the MLflow run and the registered version it used."""
    run = tracking.client().get_run(version.run_id)
    return {
        "mlflow run": MetadataValue.url(tracking.run_url(run.info.experiment_id, run.info.run_id)),
        "mlflow model version": MetadataValue.url(tracking.version_url(name, version.version)),
    }


def _what_changed(champion, identity: dict[str, str]) -> str:
    """Why a training registered a new version rather than reusing the champion's: the parts of
    its identity that differ (a part the champion has no tag for, being older, is not named)."""
    if champion is None:
        return "no champion yet"
    changed = [
        part
        for part, value in identity.items()
        if champion.tags.get(IDENTITY_TAGS[part], value) != value
    ]
    if not changed:
        return f"the training key differs from the champion's (v{champion.version})"
    verb = "differs" if len(changed) == 1 else "differ"
    return f"{' and '.join(changed)} {verb} from the champion's (v{champion.version})"


SKIPPED = "skipped"


def pipeline_asset(
    key: AssetKey,
    check_specs=(),
    pool: str | None = None,
    **spec,
):
    """One step of a pipeline: an asset whose checks may go unreported, as they do when the step
    skips (``@asset`` requires every declared check's result; a subsettable asset does not)."""
    return multi_asset(
        name="__".join(key.path),
        specs=[AssetSpec(key, **spec)],
        check_specs=checks_of_subsettable(check_specs),
        can_subset=True,
        pool=pool,
    )


def skipped(reason: str) -> MaterializeResult:
    """A step that did nothing, and says why: no table written, no check reported."""
    return MaterializeResult(metadata={SKIPPED: MetadataValue.text(reason)})


def skipped_upstream(context: AssetExecutionContext, *keys: AssetKey) -> str | None:
    """Why this step skips: an upstream step of the pipeline skipped (its latest materialization
    says so), or None."""
    for upstream in keys:
        event = context.instance.get_latest_materialization_event(upstream)
        metadata = event.asset_materialization.metadata if event else {}
        if SKIPPED in metadata:
            return f"{upstream.to_user_string()} skipped: {metadata[SKIPPED].value}"
    return None


def _inline_png(title: str, png: bytes) -> str:
    return f"![{title}](data:image/png;base64,{b64encode(png).decode()})"


def build_pipeline_assets(spec: PipelineSpec) -> list:
    name, version = spec.name, code_version(spec)
    task, (primary, _) = spec.task, PRIMARY[spec.task]
    entity, order = spec.entity.column, ", ".join(reversed(spec.key))  # time first, then entity
    examples_schema, prediction_schema = spec.examples_schema, spec.prediction_schema

    def key(asset_name: str) -> AssetKey:
        return AssetKey([name, asset_name])

    def table(asset_name: str) -> str:
        return f"{name}.{asset_name}"

    def schema_spec(asset_name: str) -> AssetCheckSpec:
        return schema_check_spec(key(asset_name))

    common = dict(group_name=name, owners=[spec.owner], code_version=version, pool=WAREHOUSE_POOL)
    split_doc = {
        "time": f"train, validation = the last {spec.split.validation_days} labelled days, "
        "score = the latest day",
        "holdout": f"train, validation = a seeded {spec.split.fraction:.0%} stratified holdout, "
        "score = rows without a label",
        "validation_file": f"train, validation = rows from landed files named "
        f"'{spec.split.file_pattern}', score = rows without a label",
    }[spec.split.by]
    leakage_checks = (
        []
        if spec.snapshot
        else [
            AssetCheckSpec(
                "no_future_leakage",
                asset=key("features"),
                blocking=True,
                description="Rebuilding the examples with the data after a past day cut off changes no "
                f"feature of the examples up to that day (on at most {SAMPLE_ENTITIES} entities "
                "spread over the ids)",
            )
        ]
    )

    @pipeline_asset(
        key=key("sandbox"),
        description=f"{spec.description}: the slice of the data the pipeline reads ({table('sandbox')})",
        deps=[AssetKey(list(d)) for d in spec.sandbox_deps],
        kinds={"duckdb", "sql"},
        metadata=spec_metadata(spec.sandbox_model, table("sandbox")),
        check_specs=[schema_spec("sandbox")],
        **common,
    )
    def sandbox(warehouse: Warehouse):
        with warehouse.transaction() as conn:
            # A misspelt table is refused when the definitions load (check_inputs): a missing
            # one is one not built yet.
            if reason := no_input_yet(conn, [".".join(d) for d in spec.sandbox_deps]):
                yield skipped(reason)
                return
            frame = conn.execute(spec.sandbox_query).pl()
            if frame.is_empty():
                yield skipped("the sandbox is empty: its query over the warehouse returned no rows")
                return
            # Most of the slice stays the same from one run to the next: write what changed.
            written = replace_changed_rows(
                conn,
                table("sandbox"),
                frame,
                spec.sandbox_model.to_schema().unique,
                version,
            )
            materialization, check = stored_table_results(
                conn, table("sandbox"), spec.sandbox_model, key("sandbox"), where=written
            )
            yield from roll_back_unless_passed(check)
        yield materialization
        yield check

    @pipeline_asset(
        key=key("features"),
        description=f"Examples for {name}: the features"
        + ("" if spec.snapshot else " as of each day")
        + f", the label, and a split ({split_doc})",
        deps=[key("sandbox")],
        kinds={"polars", "duckdb"},
        metadata=spec_metadata(examples_schema, table("features")),
        check_specs=[schema_spec("features"), *leakage_checks],
        **common,
    )
    def features(context: AssetExecutionContext, warehouse: Warehouse):
        if reason := skipped_upstream(context, key("sandbox")):
            yield skipped(reason)
            return
        source = warehouse.query(f"SELECT * FROM {table('sandbox')}")
        built = spec.build_examples(source)
        # On all examples, before the split drops some.
        leaks = None if spec.snapshot else future_leaks(spec, source, built)
        try:
            examples = split_examples(spec, warehouse, source, built)
        except NotEnoughHistory as error:
            raise Failure(f"{name}: {error}") from None
        with warehouse.transaction() as conn:
            schema = examples_schema.to_schema()
            # A day more changes a few days' rows (new examples, labels, splits), not the past.
            written = replace_changed_rows(
                conn, table("features"), examples, schema.unique, version
            )
            splits = examples.group_by("split").agg(
                rows=pl.len(),
                label_mean=pl.col("label").mean(),
                **(
                    {}
                    if spec.snapshot
                    else {"first": pl.col("as_of").min(), "last": pl.col("as_of").max()}
                ),
            )
            features = spec.features_in(examples.columns)
            materialization, check = stored_table_results(
                conn,
                table("features"),
                examples_schema,
                key("features"),
                where=written,
                splits=markdown(splits.sort("split")),
                features=MetadataValue.text(", ".join(features)),
                categorical=MetadataValue.text(
                    ", ".join(categorical_features(spec, examples, features)) or "none"
                ),
                **(
                    {"leakage guard": "not applicable: a snapshot has no time axis to cut"}
                    if spec.snapshot
                    else {}
                ),
                **column_lineage(spec.column_lineage()),
            )
            yield from roll_back_unless_passed(check)
        yield materialization
        yield check
        if leaks is not None:
            columns = sorted(set(leaks["column"]))
            yield AssetCheckResult(
                check_name="no_future_leakage",
                passed=leaks.is_empty(),
                description=one_line(
                    "no feature changes when the data after a past day is cut off"
                    if leaks.is_empty()
                    else f"{leaks.height} feature cells change when the future is cut off, in "
                    f"{', '.join(columns)}: fix how {Path(spec.source_file).name or 'the spec'} builds them"
                ),
                metadata={
                    "leaking cells": MetadataValue.int(leaks.height),
                    "by column": markdown(leaks.group_by("column").len(), rows=30),
                },
            )

    @pipeline_asset(
        key=key("model"),
        description=f"LightGBM {task} model trained on the train split"
        + (
            " (rounds found by early stopping on a share of the train split, then refit on all "
            "of it; the validation split stays for evaluation)"
            if spec.early_stopping_rounds
            else ""
        )
        + f", logged to MLflow and registered as a new version of '{name}' with alias '{CHALLENGER}'"
        + (": it takes raw records (the encoding travels inside)" if spec.snapshot else ""),
        deps=[key("features")],
        kinds={"lightgbm", "mlflow"},
        **common,
    )
    def model(
        context: AssetExecutionContext,
        config: TrainConfig,
        warehouse: Warehouse,
        mlflow_tracking: MlflowTracking,
    ):
        if reason := skipped_upstream(context, key("features")):
            return skipped(reason)
        import lightgbm as lgb
        import mlflow
        import mlflow.lightgbm
        from mlflow.models import infer_signature

        train = warehouse.query(
            f"SELECT * FROM {table('features')} WHERE split = 'train' ORDER BY {order}"
        )
        features = spec.features_in(train.columns)
        levels = category_levels(train, categorical_features(spec, train, features))
        x, y = feature_matrix(train, spec, levels), train["label"].to_numpy()
        params = spec.training_params(config.seed, features)
        rounds = config.num_boost_round or spec.num_boost_round
        categorical = list(levels) or "auto"
        data = data_version(train)
        identity = training_identity(spec, version, data, params, rounds, features, list(levels))
        training = training_key(identity)
        reused, alias = reusable_version(mlflow_tracking, name, training)
        if reused is not None:
            # Same data, code, parameters and settings: the same model, already registered. The
            # challenger alias follows, so evaluation and the gate judge this version.
            mlflow_tracking.client().set_registered_model_alias(name, CHALLENGER, reused.version)
            return MaterializeResult(
                metadata={
                    "training": MetadataValue.text(
                        f"reuses version {reused.version} (the {alias}): same data version, code "
                        "version, training code, parameters and settings, nothing trained, no "
                        "version registered"
                    ),
                    "model_version": MetadataValue.int(int(reused.version)),
                    "data version": MetadataValue.text(data),
                    "code version": MetadataValue.text(version),
                    **_links(mlflow_tracking, name, reused),
                    "mlflow_tracking_uri": mlflow_tracking.tracking_uri,
                    "train rows": MetadataValue.int(train.height),
                    "categorical": MetadataValue.text(", ".join(levels) or "none"),
                }
            )
        dataset = lgb.Dataset(x, y, feature_name=features, categorical_feature=categorical)
        trained_rounds = rounds
        if spec.early_stopping_rounds:
            # Stopping on the validation split would tune the model to the rows that judge it.
            try:
                fit_rows, stop_rows = early_stopping_split(spec, train)
            except NotEnoughHistory as error:
                raise Failure(f"{name}: no window to stop early on: {error}") from None
            fit_set = lgb.Dataset(
                feature_matrix(fit_rows, spec, levels), fit_rows["label"].to_numpy(),
                feature_name=features, categorical_feature=categorical,
            )  # fmt: skip
            stop_set = lgb.Dataset(
                feature_matrix(stop_rows, spec, levels),
                stop_rows["label"].to_numpy(),
                reference=fit_set,
            )
            stopped = lgb.train(
                params, fit_set, rounds, valid_sets=[stop_set],
                callbacks=[lgb.early_stopping(spec.early_stopping_rounds, verbose=False)],
            )  # fmt: skip
            # Refit on the whole train split for as many rounds: the stop rows are the most
            # recent of a time series' training window, too valuable to leave out.
            trained_rounds = stopped.best_iteration or rounds
        booster = lgb.train(params, dataset, trained_rounds)

        dagster_run = mlflow_tracking.dagster_run_url(context.run_id)
        tags = {
            "pipeline": name,
            "dagster/run_id": context.run_id,
            "dagster/run_url": dagster_run,
            **identity_tags(identity),
            "training_key": training,
            "train_rows": str(train.height),
            **(
                {}
                if spec.snapshot
                else {"train_window": f"{train['as_of'].min()}..{train['as_of'].max()}"}
            ),
        }
        client = mlflow_tracking.client()
        gains = booster.feature_importance("gain")
        # Stated, not inferred: inference costs seconds per model (FIELD_NOTES).
        requirements = [
            f"lightgbm=={lgb.__version__}",
            f"mlflow=={mlflow.__version__}",
            "pandas<3",
        ]
        with mlflow.start_run(
            experiment_id=mlflow_tracking.experiment_id(name),
            run_name=f"{name}-{context.run_id[:8]}",
            tags=tags,
        ) as run:
            mlflow.log_params(
                {**params, "num_boost_round": rounds, "features": ",".join(features),
                 "best_iteration": trained_rounds}
            )  # fmt: skip
            mlflow.log_dict(dict(zip(features, gains.tolist())), IMPORTANCE_JSON)
            if levels:
                mlflow.log_dict(levels, "categories.json")
            if spec.snapshot:
                info = _log_raw_records_model(booster, train, features, levels, name, requirements)
            else:
                info = mlflow.lightgbm.log_model(
                    booster,
                    name="model",
                    signature=infer_signature(x.head(100), booster.predict(x.head(100))),
                    input_example=x.head(5),
                    registered_model_name=name,
                    pip_requirements=requirements,
                )
        registered = info.registered_model_version
        client.set_registered_model_alias(name, CHALLENGER, registered)
        for tag, value in tags.items():
            client.set_model_version_tag(name, registered, tag, value)
        # MLflow renders a run's and a version's description as markdown: a link that opens.
        trained_by = f"Trained by Dagster run [{context.run_id[:8]}]({dagster_run}) ({name}/model)"
        client.set_tag(run.info.run_id, "mlflow.note.content", trained_by)
        client.update_model_version(name, registered, description=trained_by)
        importance = pl.DataFrame({"feature": features, "gain": gains.round(1)}).sort(
            "gain", descending=True
        )
        return MaterializeResult(
            metadata={
                "training": MetadataValue.text(
                    f"registered version {registered}: "
                    + _what_changed(mlflow_tracking.model_version(name, CHAMPION), identity)
                ),
                "model_version": MetadataValue.int(int(registered)),
                "data version": MetadataValue.text(data),
                "code version": MetadataValue.text(version),
                **_links(mlflow_tracking, name, client.get_model_version(name, registered)),
                "mlflow_run_id": run.info.run_id,
                "mlflow_tracking_uri": mlflow_tracking.tracking_uri,
                "train rows": MetadataValue.int(train.height),
                "boosting rounds": MetadataValue.int(trained_rounds),
                "categorical": MetadataValue.text(", ".join(levels) or "none"),
                "feature importance": markdown(importance, rows=importance.height),
            }
        )

    segments_doc = f" and by {', '.join(spec.segments)}" if spec.segments else ""

    @pipeline_asset(
        key=key("evaluation"),
        description=f"Metrics of the challenger, the naive baseline and the current champion on the "
        f"validation split, overall{segments_doc} ({table('evaluation')})",
        deps=[key("model"), key("features")],
        kinds={"mlflow", "duckdb"},
        metadata=spec_metadata(EvaluationRow, table("evaluation")),
        check_specs=[
            schema_spec("evaluation"),
            *(
                [
                    AssetCheckSpec(
                        "worst_segment",
                        asset=key("evaluation"),
                        description=f"No {' or '.join(spec.segments)} segment (of at least "
                        f"{spec.min_segment_rows} examples) has a {primary} more than "
                        f"{spec.max_segment_gap:.0%} worse than overall (warns: an unfair gap)",
                    )
                ]
                if spec.segments
                else []
            ),
        ],
        **common,
    )
    def evaluation(
        context: AssetExecutionContext, warehouse: Warehouse, mlflow_tracking: MlflowTracking
    ):
        from dp_assets.analysis import plots

        if reason := skipped_upstream(context, key("model")):
            yield skipped(reason)
            return
        challenger = _require(
            mlflow_tracking.model_version(name, CHALLENGER),
            f"no '{CHALLENGER}' version of {name}: materialize {key('model').to_user_string()}",
        )
        champion = mlflow_tracking.model_version(name, CHAMPION)
        examples = warehouse.query(
            f"SELECT * FROM {table('features')} WHERE split IN ('train', 'validation') ORDER BY {order}"
        )
        train, validation = (
            examples.filter(pl.col("split") == "train"),
            examples.filter(pl.col("split") == "validation"),
        )
        booster, predict = _scorer(mlflow_tracking, name, challenger.version, spec)
        predictors = {"challenger": (int(challenger.version), predict(validation)),
                      "baseline": (None, baseline(spec, train, validation))}  # fmt: skip
        if champion is not None and champion.version != challenger.version:
            predictors["champion"] = (
                int(champion.version),
                _scorer(mlflow_tracking, name, champion.version, spec)[1](validation),
            )
        rows = [
            {"model": who, "model_version": model_version, **row}
            for who, (model_version, predicted) in predictors.items()
            for row in by_segment(
                task,
                validation.with_columns(prediction=pl.Series(predicted)),
                spec.segments,
                spec.precision_at_k,
            )
        ]
        frame = pl.DataFrame(rows, schema=polars_schema(EvaluationRow))
        overall = {
            (r["model"], r["metric"]): r["value"] for r in rows if r["segment_column"] == "all"
        }
        vs_baseline = improvement(
            task, overall[("challenger", primary)], overall[("baseline", primary)]
        )

        features = spec.features_in(examples.columns)
        images = {
            "performance": plots.PLOTS[task](
                validation["label"].to_numpy(), predictors["challenger"][1]
            ),
            "feature_importance": plots.feature_importance(
                features, booster.feature_importance("gain")
            ),
        }
        client = mlflow_tracking.client()
        run_id = challenger.run_id
        prefix = {"challenger": "validation", "baseline": "baseline", "champion": "champion"}
        for (who, metric), value in overall.items():
            if value is not None:
                client.log_metric(run_id, f"{prefix[who]}_{metric}", value)
        client.log_metric(run_id, f"improvement_vs_baseline_{primary}", vs_baseline)
        _log_files(
            client,
            run_id,
            EVALUATION_FOLDER,
            {f"{t}.png": png for t, png in images.items()}
            | {"segments.csv": frame.write_csv().encode()},
        )

        summary = {
            # First, so that the asset page shows the images before the figures.
            "plots": MetadataValue.md(
                "\n\n".join(
                    f"![{t}]({mlflow_tracking.artifact_url(run_id, f'{EVALUATION_FOLDER}/{t}.png')})"
                    for t in images
                )
            ),
            **_links(mlflow_tracking, name, challenger),
            **{
                f"{who} {m}": MetadataValue.float(round(v, 6))
                for (who, m), v in overall.items()
                if v is not None
            },
            f"improvement_vs_baseline_{primary}": MetadataValue.float(round(vs_baseline, 4)),
            "challenger_version": MetadataValue.int(int(challenger.version)),
            "validation rows": MetadataValue.int(validation.height),
            **(
                {}
                if spec.snapshot
                else {
                    "validation window": f"{validation['as_of'].min()}..{validation['as_of'].max()}"
                }
            ),
            "by segment": markdown(
                frame.filter((pl.col("metric") == primary) & (pl.col("model") == "challenger")),
                rows=20,
            ),
            "plots (embedded)": MetadataValue.md(
                "\n\n".join(_inline_png(t, png) for t, png in images.items())
            ),
        }
        with warehouse.transaction() as conn:
            replace_table_with(conn, table("evaluation"), frame)
            materialization, check = stored_table_results(
                conn, table("evaluation"), EvaluationRow, key("evaluation"), **summary
            )
            yield from roll_back_unless_passed(check)
        yield materialization
        yield check
        if spec.segments:
            gaps = segment_gaps(task, frame, spec.min_segment_rows)
            fair = gaps.is_empty() or gaps["gap"].max() <= spec.max_segment_gap
            if gaps.is_empty():
                worst = f"no segment of at least {spec.min_segment_rows} examples to compare"
            elif gaps["gap"].max() <= 0:
                worst = f"no segment does worse than overall on {primary}"
            else:
                worst = (
                    f"{' = '.join(gaps.row(0)[:2])} is {gaps['gap'].max():.0%} worse than "
                    f"overall on {primary}"
                )
            yield AssetCheckResult(
                check_name="worst_segment",
                passed=fair,
                severity=AssetCheckSeverity.WARN,
                description=one_line(
                    f"{worst} (allowed {spec.max_segment_gap:.0%})"
                    + (
                        ""
                        if fair
                        else ": check that segment's data before trusting the model there"
                    )
                ),
                metadata={
                    "worst segment": " = ".join(gaps.row(0)[:2]) if gaps.height else "none",
                    "worst gap": MetadataValue.float(round(gaps["gap"].max(), 4))
                    if gaps.height
                    else "none",
                    "max gap": MetadataValue.float(spec.max_segment_gap),
                    "segments": markdown(gaps, rows=max(gaps.height, 1)),
                },
            )

    @pipeline_asset(
        key=key("champion"),
        description=f"The champion/challenger gate: the challenger becomes '{CHAMPION}' only if it beats the "
        f"baseline by {spec.gate.min_improvement_vs_baseline:.0%} and the champion by "
        f"{spec.gate.min_improvement_vs_champion:.0%} on {primary}; every decision is kept in {table('promotions')}",
        deps=[key("evaluation")],
        kinds={"mlflow", "duckdb"},
        metadata=spec_metadata(Promotion, table("promotions")),
        check_specs=[
            schema_spec("champion"),
            AssetCheckSpec(
                "promotion_gate",
                asset=key("champion"),
                blocking=True,
                description="Passes when the challenger was promoted, is the champion already (still "
                "clearing the baseline margin) or ties it; WARN when the champion stays in place "
                "after a challenger doing worse, or no longer clears that margin itself, "
                "ERROR (stopping predictions) when there is no champion at all",
            ),
        ],
        **common,
    )
    def champion(
        context: AssetExecutionContext, warehouse: Warehouse, mlflow_tracking: MlflowTracking
    ):
        if reason := skipped_upstream(context, key("evaluation")):
            yield skipped(reason)
            return
        overall = warehouse.query(
            f"SELECT model, model_version, value FROM {table('evaluation')} WHERE segment_column = 'all' AND metric = ?",
            [primary],
        )
        metric = {row["model"]: row for row in overall.iter_rows(named=True)}
        challenger_version = metric["challenger"]["model_version"]
        before = mlflow_tracking.model_version(name, CHAMPION)
        challenger_value = metric["challenger"]["value"]
        baseline_value = metric["baseline"]["value"]
        client = mlflow_tracking.client()
        if before is not None and int(before.version) == challenger_version:
            # The model step reused the champion's version: it keeps the gate tag it earned.
            decision = already_champion(
                task, spec.gate, challenger_version, challenger_value, baseline_value
            )
            champion_metric = challenger_value
        else:
            champion_metric = metric["champion"]["value"] if "champion" in metric else None
            decision = decide(task, spec.gate, challenger_value, baseline_value, champion_metric)
            client.set_model_version_tag(name, challenger_version, "gate", decision.reason)
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, challenger_version)
        after = mlflow_tracking.model_version(name, CHAMPION)
        record = pl.DataFrame(
            [{
                "decided_at": dt.datetime.now(dt.UTC),
                "challenger_version": challenger_version,
                "champion_before": int(before.version) if before else None,
                "champion_after": int(after.version) if after else None,
                "promoted": decision.promote,
                "metric": primary,
                "challenger_value": challenger_value,
                "baseline_value": baseline_value,
                "champion_value": champion_metric,
                "reason": decision.reason,
            }],
            schema=polars_schema(Promotion),
        )  # fmt: skip
        with warehouse.transaction() as conn:
            ensure_table(conn, table("promotions"), Promotion)
            insert(conn, table("promotions"), record)
            materialization, check = stored_table_results(
                conn,
                table("promotions"),
                Promotion,
                key("champion"),
                champion_version=MetadataValue.int(int(after.version))
                if after
                else MetadataValue.text("none"),
                decision=MetadataValue.text(decision.reason),
                **(_links(mlflow_tracking, name, after) if after else {}),
            )
        yield materialization
        yield check
        yield AssetCheckResult(
            check_name="promotion_gate",
            passed=decision.promote or (decision.settled and after is not None),
            severity=AssetCheckSeverity.WARN if after else AssetCheckSeverity.ERROR,
            description=one_line(
                decision.reason
                if decision.promote or decision.settled
                else f"{decision.reason}; champion v{after.version} keeps serving"
                if after
                else f"{decision.reason}; no champion: predictions stop until a model passes"
            ),
            metadata={
                "reason": MetadataValue.text(decision.reason),
                "champion_version": MetadataValue.text(str(after.version) if after else "none"),
            },
        )

    scored = (
        "the entities without a label"
        if spec.snapshot
        else "the latest day, kept per day, the record monitoring joins with actuals"
    )

    @pipeline_asset(
        key=key("predictions"),
        description=f"The champion's predictions for {scored}, with model version and time, "
        f"and a rejected challenger's beside them in the shadow ({table('predictions')})",
        deps=[key("champion"), key("features")],
        kinds={"mlflow", "duckdb"},
        metadata=spec_metadata(prediction_schema, table("predictions")),
        check_specs=[schema_spec("predictions")],
        **common,
    )
    def predictions(
        context: AssetExecutionContext, warehouse: Warehouse, mlflow_tracking: MlflowTracking
    ):
        if reason := skipped_upstream(context, key("champion")):
            yield skipped(reason)
            return
        current = _require(
            mlflow_tracking.model_version(name, CHAMPION),
            f"{name} has no '{CHAMPION}' yet: no model has passed the gate",
        )
        challenger = mlflow_tracking.model_version(name, CHALLENGER)
        shadow = challenger if challenger and challenger.version != current.version else None
        score = warehouse.query(
            f"SELECT * FROM {table('features')} WHERE split = 'score' ORDER BY {entity}"
        )

        def predicted(version):
            if version is None or score.is_empty():
                return pl.lit(None, pl.Float64)
            return pl.Series(
                _scorer(mlflow_tracking, name, version, spec)[1](score), dtype=pl.Float64
            )

        frame = (
            score.select(spec.key)
            .with_columns(
                prediction=predicted(current.version),
                model_name=pl.lit(name),
                model_version=pl.lit(int(current.version), dtype=pl.Int64),
                # A challenger the gate rejected keeps predicting in the shadow, never served: live
                # accuracy compares the two on the same actuals.
                challenger_prediction=predicted(shadow.version if shadow else None),
                challenger_version=pl.lit(int(shadow.version) if shadow else None, dtype=pl.Int64),
                predicted_at=pl.lit(dt.datetime.now(dt.UTC), dtype=pl.Datetime("us", "UTC")),
            )
            .select(list(polars_schema(prediction_schema)))
        )
        with warehouse.transaction() as conn:
            ensure_table(conn, table("predictions"), prediction_schema)
            if spec.snapshot:  # the latest scoring is the whole table
                replace_table_with(conn, table("predictions"), frame)
            else:
                replace_where(
                    conn, table("predictions"), "as_of", frame["as_of"].unique().to_list(), frame
                )
            materialization, check = stored_table_results(
                conn, table("predictions"), prediction_schema, key("predictions"),
                scored=MetadataValue.int(frame.height), model_version=MetadataValue.int(int(current.version)),
            )  # fmt: skip
            yield from roll_back_unless_passed(check)
        yield materialization
        yield check

    return [
        sandbox, features, model, evaluation, champion, predictions,
        *build_monitoring_assets(spec, common),
    ]  # fmt: skip


def split_examples(
    spec: PipelineSpec, warehouse: Warehouse, sandbox: pl.DataFrame, built: pl.DataFrame
) -> pl.DataFrame:
    """The examples as stored: the spec's split assigned, the stored columns only, in key order."""
    entity = spec.entity.column
    if spec.split.by == "time":
        examples = split_by_time(built, spec.split.validation_days, spec.horizon_days)
    elif spec.split.by == "holdout":
        examples = split_holdout(
            built, entity, spec.split.fraction, spec.split.seed, spec.task == "classification"
        )
    else:
        if "file_sha256" not in sandbox.columns:
            raise Failure(
                f"{spec.name}: split by validation_file needs the sandbox's file_sha256 column "
                "(select it from the formatted table)"
            )
        from dp_assets.landing.assets import MANIFEST

        deliveries = warehouse.query(f"SELECT sha256, original_name FROM {MANIFEST}")
        examples = split_by_file(built, entity, sandbox, deliveries, spec.split.file_pattern)
        if examples.filter(pl.col("split") == "validation").is_empty():
            raise Failure(
                f"{spec.name}: no row of the sandbox comes from a landed file named like "
                f"'{spec.split.file_pattern}': nothing to validate on"
            )
    examples = examples.with_columns(pl.col(entity).cast(pl.String))
    if (columns := spec.stored_columns) is not None:
        segments = [c for c in columns if c in spec.segments]
        examples = examples.with_columns(pl.col(segments).cast(pl.String)).select(columns)
    else:
        first = [*spec.key, "split", "label"]
        rest = [c for c in examples.columns if c not in (*first, *LINEAGE_COLUMNS)]
        examples = examples.select(*first, *rest)
    return examples.sort(list(reversed(spec.key)))


def early_stopping_split(
    spec: PipelineSpec, train: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fit, stop): the train split cut again, so that early stopping never sees the validation
    split the evaluation and the gate judge the model on. A time series stops on the last
    ``min(validation_days, a fifth)`` days of the train window, fit ending the label horizon
    before them; a snapshot on a seeded share ``split.fraction`` of the train rows (stratified
    by label for classification), drawn with another seed than the holdout."""
    rows = train.drop("split")
    if spec.snapshot:
        stratified = spec.task == "classification"
        inner = split_holdout(
            rows, spec.entity.column, spec.split.fraction, spec.split.seed + 1, stratified
        )
    else:
        days = max(1, min(spec.split.validation_days, train["as_of"].n_unique() // 5))
        inner = split_by_time(rows, days, spec.horizon_days)
    stop = pl.col("split") == "validation"
    as_train = pl.lit("train").alias("split")
    return (
        inner.filter(~stop).with_columns(as_train).select(train.columns),
        inner.filter(stop).with_columns(as_train).select(train.columns),
    )


def categorical_features(spec: PipelineSpec, frame: pl.DataFrame, features: list[str]) -> list[str]:
    """The declared categorical features and every string one."""
    return [
        c
        for c in features
        if c in spec.categorical or frame.schema[c] in (pl.String, pl.Categorical)
    ]


def category_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A categorical column as the text of its levels, as ``served.level_text`` writes a served
    value: an integral double is written as the integer (13.0 -> '13')."""
    value = pl.col(column)
    if frame.schema[column].is_float():
        integral = value.cast(pl.Int64, strict=False).cast(pl.String)
        return pl.when(value == value.round()).then(integral).otherwise(value.cast(pl.String))
    return value.cast(pl.String)


def category_levels(train: pl.DataFrame, categorical: list[str]) -> dict[str, list[str]]:
    """Each categorical feature's levels, as learned from the training rows (sorted: stable)."""
    return {
        c: sorted(train.select(category_text(train, c)).to_series().drop_nulls().unique().to_list())
        for c in categorical
    }


def as_categories_text(frame: pl.DataFrame, levels: dict) -> pl.DataFrame:
    """``frame`` with its categorical columns as text, before pandas: pandas makes an integer
    column with a null a double one, whose text ('13.0') would match no level."""
    return frame.with_columns(
        category_text(frame, c).alias(c) for c in levels if c in frame.columns
    )


def baseline(spec: PipelineSpec, train: pl.DataFrame, frame: pl.DataFrame) -> np.ndarray:
    """The spec's naive predictions, or the training prior (classification) or mean."""
    if spec.baseline is not None:
        return spec.baseline(train, frame)
    return np.full(frame.height, float(train["label"].mean()))


def _require(value, message: str):
    if value is None:
        raise Failure(message)
    return value


def _scorer(tracking: MlflowTracking, name: str, model_version: str | int, spec: PipelineSpec):
    """(booster, predict): a registered version's LightGBM booster and a function of a features
    frame to its predictions."""
    if not spec.snapshot:
        booster = tracking.load_lightgbm(name, model_version)
        return booster, lambda frame: booster.predict(feature_matrix(frame, spec))
    tracking.client()  # MLflow's registry URI is process-global: point it at the resource first
    loaded = import_frozen("mlflow.pyfunc").load_model(f"models:/{name}/{model_version}")
    wrapper = loaded.unwrap_python_model()
    return wrapper.booster, lambda frame: wrapper.predict(
        None, as_categories_text(frame, wrapper.levels).to_pandas()
    )


def _log_raw_records_model(booster, train, features, levels, name, requirements):
    """Log the booster inside the raw-records wrapper: a served request holds records as the
    sandbox has them (any feature may be left out), and the wrapper encodes them as in training."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    from dp_assets.analysis.served import RawRecords

    # Each feature as the sandbox types it (a numeric category stays a number: a record sends
    # `education_num: 14`), and optional: a record may lack one, which the encoding reads as
    # missing. An integer is `long`: schema enforcement refuses an int64 column for a double.
    def column_type(dtype: pl.DataType) -> str:
        return "long" if dtype.is_integer() else "double" if dtype.is_numeric() else "string"

    frame = train.select(features)
    inputs = Schema([ColSpec(column_type(frame.schema[c]), c, required=False) for c in features])
    wrapper = RawRecords(features, levels)
    wrapper.booster = booster
    # An example without nulls: pandas would make an integer column with one a double.
    example = (frame.drop_nulls() if frame.drop_nulls().height else frame).head(5).to_pandas()
    outputs = infer_signature(model_output=wrapper.predict(None, example)).outputs
    signature = ModelSignature(inputs=inputs, outputs=outputs)
    wrapper.booster = None  # the booster travels as its own artifact, not in the pickle
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "booster.txt"
        booster.save_model(str(path))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapper,
            artifacts={"booster": str(path)},
            signature=signature,
            input_example=example,
            registered_model_name=name,
            pip_requirements=requirements,
        )


def feature_matrix(frame: pl.DataFrame, spec: PipelineSpec, levels: dict | None = None):
    """The model's input: categorical features as pandas categories (of ``levels``, or of the
    values present: LightGBM maps them to its training levels by name), the others as doubles."""
    from dp_assets.analysis.served import encode

    features = spec.features_in(frame.columns)
    if levels is None:
        levels = category_levels(frame, categorical_features(spec, frame, features))
    return encode(as_categories_text(frame.select(features), levels).to_pandas(), features, levels)


def _log_files(client, run_id: str, folder: str, files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for filename, content in files.items():
            (Path(tmp) / filename).write_bytes(content)
            client.log_artifact(run_id, str(Path(tmp) / filename), folder)
