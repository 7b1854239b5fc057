"""The pipeline factory: one ``PipelineSpec`` in, the chain of assets out.

``[<p>, sandbox] -> features -> model -> evaluation -> champion -> predictions``, then ``drift`` and
``live_accuracy`` (``monitoring_assets.py``), all in the group and DuckDB schema named after the
pipeline. Models are LightGBM, tracked and registered in MLflow under
the pipeline's name: ``model`` registers a new version as ``challenger``; ``evaluation`` scores it,
the naive baseline and the current ``champion`` on the same validation window; ``champion`` moves
the alias only when the gate passes; ``predictions`` scores the latest day with the champion.

The gate is a blocking check: it fails with ERROR severity (stopping predictions) only when no
champion exists at all, and with WARN when a rejected challenger leaves the previous champion in
place, so scoring goes on with the model that earned it.
"""

import datetime as dt
import hashlib
import inspect
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
    MetadataValue,
    asset,
)

from dp_assets.analysis.gate import decide
from dp_assets.analysis.leakage import SAMPLE_CUSTOMERS, future_leaks
from dp_assets.analysis.metrics import PRIMARY, by_segment, improvement
from dp_assets.analysis.monitoring import segment_gaps
from dp_assets.analysis.monitoring_assets import build_monitoring_assets
from dp_assets.analysis.schema import EvaluationRow, Prediction, Promotion
from dp_assets.analysis.spec import PipelineSpec
from dp_assets.analysis.timeseries import NotEnoughHistory, split_by_time
from dp_assets.frames import polars_schema
from dp_assets.metadata import (
    WAREHOUSE_POOL,
    column_lineage,
    markdown,
    roll_back_unless_passed,
    spec_metadata,
    stored_table_results,
    schema_check_spec,
)
from dp_assets.resources import MlflowTracking, Warehouse
from dp_assets.resources.tables import (
    ensure_table,
    insert,
    replace_changed_rows,
    replace_table_with,
    replace_where,
)

FACTORY_VERSION = "1"
CHALLENGER, CHAMPION = "challenger", "champion"


class TrainConfig(Config):
    seed: int = 7
    """Random seed of LightGBM: same data, code and seed give the same model and metrics."""
    num_boost_round: int = 0
    """Boosting rounds; 0 uses the pipeline spec's."""


def code_version(spec: PipelineSpec) -> str:
    """Changes whenever the factory or the pipeline's spec module changes."""
    source = inspect.getsource(sys.modules[spec.build_examples.__module__])
    return f"{FACTORY_VERSION}-{hashlib.sha256(source.encode()).hexdigest()[:10]}"


def _inline_png(title: str, png: bytes) -> str:
    return f"![{title}](data:image/png;base64,{b64encode(png).decode()})"


def build_pipeline_assets(spec: PipelineSpec) -> list:
    name, version = spec.name, code_version(spec)
    task, (primary, _) = spec.task, PRIMARY[spec.task]

    def key(asset_name: str) -> AssetKey:
        return AssetKey([name, asset_name])

    def table(asset_name: str) -> str:
        return f"{name}.{asset_name}"

    def schema_spec(asset_name: str) -> AssetCheckSpec:
        return schema_check_spec(key(asset_name))

    common = dict(group_name=name, owners=[spec.owner], code_version=version, pool=WAREHOUSE_POOL)

    @asset(
        key=key("sandbox"),
        description=f"{spec.description}: the slice of the exploitation zone the pipeline reads ({table('sandbox')})",
        deps=[AssetKey(list(d)) for d in spec.sandbox_deps],
        kinds={"duckdb", "sql"},
        metadata=spec_metadata(spec.sandbox_schema, table("sandbox")),
        check_specs=[schema_spec("sandbox")],
        **common,
    )
    def sandbox(warehouse: Warehouse):
        with warehouse.transaction() as conn:
            # Most of the slice stays the same from one run to the next: write what changed.
            written = replace_changed_rows(
                conn,
                table("sandbox"),
                conn.execute(spec.sandbox_query).pl(),
                spec.sandbox_schema.to_schema().unique,
                version,
            )
            materialization, check = stored_table_results(
                conn, table("sandbox"), spec.sandbox_schema, key("sandbox"), where=written
            )
            yield from roll_back_unless_passed(check)
        yield materialization
        yield check

    @asset(
        key=key("features"),
        description=f"Examples for {name}: features as of each day, the label, and a time split "
        f"(train, validation = the last {spec.validation_days} labelled days, score = the latest day)",
        deps=[key("sandbox")],
        kinds={"polars", "duckdb"},
        metadata=spec_metadata(spec.features_schema, table("features")),
        check_specs=[
            schema_spec("features"),
            AssetCheckSpec(
                "no_future_leakage",
                asset=key("features"),
                blocking=True,
                description="Rebuilding the examples with the data after a past day cut off changes no "
                f"feature of the examples up to that day (on at most {SAMPLE_CUSTOMERS} customers "
                "spread over the ids)",
            ),
        ],
        **common,
    )
    def features(warehouse: Warehouse):
        source = warehouse.query(f"SELECT * FROM {table('sandbox')}")
        if source.is_empty():
            raise Failure(
                f"{name}: the sandbox is empty: the exploitation zone has no data for it yet"
            )
        built = spec.build_examples(source)
        leaks = future_leaks(spec, source, built)  # on all examples, before the split drops some
        try:
            examples = split_by_time(built, spec.validation_days, spec.horizon_days)
        except NotEnoughHistory as error:
            raise Failure(f"{name}: {error}") from None
        with warehouse.transaction() as conn:
            schema = spec.features_schema.to_schema()
            # A day more changes a few days' rows (new examples, labels, splits), not the past.
            written = replace_changed_rows(
                conn,
                table("features"),
                examples.select(list(schema.columns)).sort("as_of", "customer_id"),
                schema.unique,
                version,
            )
            splits = examples.group_by("split").agg(
                rows=pl.len(),
                label_mean=pl.col("label").mean(),
                first=pl.col("as_of").min(),
                last=pl.col("as_of").max(),
            )
            materialization, check = stored_table_results(
                conn,
                table("features"),
                spec.features_schema,
                key("features"),
                where=written,
                splits=markdown(splits.sort("first")),
                **column_lineage(spec.column_lineage()),
            )
            yield from roll_back_unless_passed(check)
        yield materialization
        yield check
        yield AssetCheckResult(
            check_name="no_future_leakage",
            passed=leaks.is_empty(),
            metadata={
                "leaking cells": MetadataValue.int(leaks.height),
                "by column": markdown(leaks.group_by("column").len(), rows=30),
            },
        )

    @asset(
        key=key("model"),
        description=f"LightGBM {task} model trained on the train split, logged to MLflow and registered "
        f"as a new version of '{name}' with alias '{CHALLENGER}'",
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
        import lightgbm as lgb
        import mlflow
        import mlflow.lightgbm
        from mlflow.models import infer_signature

        train = warehouse.query(
            f"SELECT * FROM {table('features')} WHERE split = 'train' ORDER BY as_of, customer_id"
        )
        x, y = feature_matrix(train, spec), train["label"].to_numpy()
        params = spec.training_params(config.seed)
        rounds = config.num_boost_round or spec.num_boost_round
        booster = lgb.train(params, lgb.Dataset(x, y, feature_name=spec.feature_columns), rounds)

        features_event = context.instance.get_latest_materialization_event(key("features"))
        data_version = (
            features_event.asset_materialization.tags.get("dagster/data_version", "")
            if features_event
            else ""
        )
        tags = {
            "pipeline": name,
            "dagster/run_id": context.run_id,
            "dagster/code_version": version,
            f"data_version/{name}/features": data_version,
            "train_rows": str(train.height),
            "train_window": f"{train['as_of'].min()}..{train['as_of'].max()}",
        }
        client = mlflow_tracking.client()
        gains = booster.feature_importance("gain")
        with mlflow.start_run(
            experiment_id=mlflow_tracking.experiment_id(name),
            run_name=f"{name}-{context.run_id[:8]}",
            tags=tags,
        ) as run:
            mlflow.log_params(
                {**params, "num_boost_round": rounds, "features": ",".join(spec.feature_columns)}
            )
            mlflow.log_dict(
                dict(zip(spec.feature_columns, gains.tolist())), "feature_importance.json"
            )
            info = mlflow.lightgbm.log_model(
                booster,
                name="model",
                signature=infer_signature(x.head(100), booster.predict(x.head(100))),
                input_example=x.head(5),
                registered_model_name=name,
                # Stated, not inferred: inference costs seconds per model (FIELD_NOTES).
                pip_requirements=[
                    f"lightgbm=={lgb.__version__}",
                    f"mlflow=={mlflow.__version__}",
                    "pandas<3",
                ],
            )
        registered = info.registered_model_version
        client.set_registered_model_alias(name, CHALLENGER, registered)
        for tag, value in tags.items():
            client.set_model_version_tag(name, registered, tag, value)
        importance = pl.DataFrame({"feature": spec.feature_columns, "gain": gains.round(1)}).sort(
            "gain", descending=True
        )
        return MaterializeResult(
            metadata={
                "model_version": MetadataValue.int(int(registered)),
                "mlflow_run_id": run.info.run_id,
                "mlflow_tracking_uri": mlflow_tracking.tracking_uri,
                "train rows": MetadataValue.int(train.height),
                "feature importance": markdown(importance, rows=importance.height),
            }
        )

    @asset(
        key=key("evaluation"),
        description=f"Metrics of the challenger, the naive baseline and the current champion on the "
        f"validation window, overall and by {', '.join(spec.segments)} ({table('evaluation')})",
        deps=[key("model"), key("features")],
        kinds={"mlflow", "duckdb"},
        metadata=spec_metadata(EvaluationRow, table("evaluation")),
        check_specs=[
            schema_spec("evaluation"),
            AssetCheckSpec(
                "worst_segment",
                asset=key("evaluation"),
                description=f"No {' or '.join(spec.segments)} segment (of at least "
                f"{spec.min_segment_rows} examples) has a {primary} more than "
                f"{spec.max_segment_gap:.0%} worse than overall (warns: an unfair gap)",
            ),
        ],
        **common,
    )
    def evaluation(warehouse: Warehouse, mlflow_tracking: MlflowTracking):
        from dp_assets.analysis import plots

        challenger = _require(
            mlflow_tracking.model_version(name, CHALLENGER),
            f"no '{CHALLENGER}' version of {name}: materialize {key('model').to_user_string()}",
        )
        champion = mlflow_tracking.model_version(name, CHAMPION)
        examples = warehouse.query(
            f"SELECT * FROM {table('features')} WHERE split IN ('train', 'validation') ORDER BY as_of, customer_id"
        )
        train, validation = (
            examples.filter(pl.col("split") == "train"),
            examples.filter(pl.col("split") == "validation"),
        )
        booster = mlflow_tracking.load_lightgbm(name, challenger.version)
        predictors = {"challenger": (int(challenger.version), booster.predict(feature_matrix(validation, spec))),
                      "baseline": (None, spec.baseline(train, validation))}  # fmt: skip
        if champion is not None and champion.version != challenger.version:
            predictors["champion"] = (
                int(champion.version),
                _predict(mlflow_tracking, name, champion.version, validation, spec),
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

        images = {
            "performance": plots.PLOTS[task](
                validation["label"].to_numpy(), predictors["challenger"][1]
            ),
            "feature_importance": plots.feature_importance(
                spec.feature_columns, booster.feature_importance("gain")
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
            "evaluation",
            {f"{t}.png": png for t, png in images.items()}
            | {"segments.csv": frame.write_csv().encode()},
        )

        summary = {
            **{
                f"{who} {m}": MetadataValue.float(round(v, 6))
                for (who, m), v in overall.items()
                if v is not None
            },
            f"improvement_vs_baseline_{primary}": MetadataValue.float(round(vs_baseline, 4)),
            "challenger_version": MetadataValue.int(int(challenger.version)),
            "validation rows": MetadataValue.int(validation.height),
            "validation window": f"{validation['as_of'].min()}..{validation['as_of'].max()}",
            "by segment": markdown(
                frame.filter((pl.col("metric") == primary) & (pl.col("model") == "challenger")),
                rows=20,
            ),
            "plots": MetadataValue.md(
                "\n\n".join(_inline_png(t, png) for t, png in images.items())
            ),
        }
        with warehouse.transaction() as conn:
            replace_table_with(conn, table("evaluation"), frame)
            materialization, check = stored_table_results(
                conn, table("evaluation"), EvaluationRow, key("evaluation"), **summary
            )
            yield from roll_back_unless_passed(check)
        gaps = segment_gaps(task, frame, spec.min_segment_rows)
        yield materialization
        yield check
        yield AssetCheckResult(
            check_name="worst_segment",
            passed=gaps.is_empty() or gaps["gap"].max() <= spec.max_segment_gap,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "worst segment": " = ".join(gaps.row(0)[:2]) if gaps.height else "none",
                "worst gap": MetadataValue.float(round(gaps["gap"].max(), 4))
                if gaps.height
                else "none",
                "max gap": MetadataValue.float(spec.max_segment_gap),
                "segments": markdown(gaps, rows=max(gaps.height, 1)),
            },
        )

    @asset(
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
                description="Passes when the challenger was promoted; WARN when the previous champion stays, "
                "ERROR (stopping predictions) when there is no champion at all",
            ),
        ],
        **common,
    )
    def champion(warehouse: Warehouse, mlflow_tracking: MlflowTracking):
        overall = warehouse.query(
            f"SELECT model, model_version, value FROM {table('evaluation')} WHERE segment_column = 'all' AND metric = ?",
            [primary],
        )
        metric = {row["model"]: row for row in overall.iter_rows(named=True)}
        challenger_version = metric["challenger"]["model_version"]
        before = mlflow_tracking.model_version(name, CHAMPION)
        # Evaluation scores the champion only when it is another version than the challenger.
        champion_metric = metric["champion"]["value"] if "champion" in metric else None
        decision = decide(
            task,
            spec.gate,
            metric["challenger"]["value"],
            metric["baseline"]["value"],
            champion_metric,
        )

        client = mlflow_tracking.client()
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
                "challenger_value": metric["challenger"]["value"],
                "baseline_value": metric["baseline"]["value"],
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
            )
        yield materialization
        yield check
        yield AssetCheckResult(
            check_name="promotion_gate",
            passed=decision.promote,
            severity=AssetCheckSeverity.WARN if after else AssetCheckSeverity.ERROR,
            metadata={
                "reason": MetadataValue.text(decision.reason),
                "champion_version": MetadataValue.text(str(after.version) if after else "none"),
            },
        )

    @asset(
        key=key("predictions"),
        description=f"The champion's predictions for the latest day, with model version and time, "
        f"and a rejected challenger's beside them in the shadow ({table('predictions')}); kept per "
        "day, the record monitoring joins with actuals",
        deps=[key("champion"), key("features")],
        kinds={"mlflow", "duckdb"},
        metadata=spec_metadata(Prediction, table("predictions")),
        check_specs=[schema_spec("predictions")],
        **common,
    )
    def predictions(warehouse: Warehouse, mlflow_tracking: MlflowTracking):
        current = _require(
            mlflow_tracking.model_version(name, CHAMPION),
            f"{name} has no '{CHAMPION}' yet: no model has passed the gate",
        )
        challenger = mlflow_tracking.model_version(name, CHALLENGER)
        shadow = challenger if challenger and challenger.version != current.version else None
        score = warehouse.query(
            f"SELECT * FROM {table('features')} WHERE split = 'score' ORDER BY customer_id"
        )

        def predicted(version):
            if version is None:
                return pl.lit(None, pl.Float64)
            return pl.Series(
                _predict(mlflow_tracking, name, version, score, spec), dtype=pl.Float64
            )

        frame = score.select("customer_id", "as_of").with_columns(
            prediction=predicted(current.version),
            model_name=pl.lit(name),
            model_version=pl.lit(int(current.version), dtype=pl.Int64),
            # A challenger the gate rejected keeps predicting in the shadow, never served: live
            # accuracy compares the two on the same actuals.
            challenger_prediction=predicted(shadow.version if shadow else None),
            challenger_version=pl.lit(int(shadow.version) if shadow else None, dtype=pl.Int64),
            predicted_at=pl.lit(dt.datetime.now(dt.UTC), dtype=pl.Datetime("us", "UTC")),
        )
        with warehouse.transaction() as conn:
            ensure_table(conn, table("predictions"), Prediction)
            replace_where(
                conn, table("predictions"), "as_of", frame["as_of"].unique().to_list(), frame
            )
            materialization, check = stored_table_results(
                conn, table("predictions"), Prediction, key("predictions"),
                scored=MetadataValue.int(frame.height), model_version=MetadataValue.int(int(current.version)),
            )  # fmt: skip
            yield from roll_back_unless_passed(check)
        yield materialization
        yield check

    return [
        sandbox, features, model, evaluation, champion, predictions,
        *build_monitoring_assets(spec, common),
    ]  # fmt: skip


def _require(value, message: str):
    if value is None:
        raise Failure(message)
    return value


def _predict(
    tracking: MlflowTracking,
    name: str,
    model_version: str | int,
    frame: pl.DataFrame,
    spec: PipelineSpec,
) -> np.ndarray:
    return tracking.load_lightgbm(name, model_version).predict(feature_matrix(frame, spec))


def feature_matrix(frame: pl.DataFrame, spec: PipelineSpec):
    """The model's input: the feature columns as doubles, so a missing value is NaN, never a type
    error at serving time (an integer column cannot hold one)."""
    return frame.select(pl.col(spec.feature_columns).cast(pl.Float64)).to_pandas()


def _log_files(client, run_id: str, folder: str, files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for filename, content in files.items():
            (Path(tmp) / filename).write_bytes(content)
            client.log_artifact(run_id, str(Path(tmp) / filename), folder)
