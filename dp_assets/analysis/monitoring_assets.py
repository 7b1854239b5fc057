"""Dagster wiring of a pipeline's monitoring: ``[<p>, drift]`` and ``[<p>, live_accuracy]``.

Both follow new data by themselves (eager), and their checks are the signals the
``retrain_on_degradation`` sensor listens to (``PipelineSpec.retrain_on``). Where a measure means
nothing (live accuracy of a snapshot, whose labels never arrive after its predictions; drift when
nothing is scored) the asset materializes with ``not applicable: <why>`` and reports no check:
never a pass it did not earn.
"""

import datetime as dt

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
)

from dp_assets.analysis import monitoring
from dp_assets.analysis.metrics import PRIMARY, improvement
from dp_assets.analysis.schema import DriftRow, LiveAccuracyRow, Promotion
from dp_assets.analysis.spec import PipelineSpec
from dp_assets.frames import polars_schema
from dp_assets.metadata import (
    markdown,
    one_line,
    schema_check_spec,
    spec_metadata,
    stored_table_results,
)
from dp_assets.resources import Warehouse
from dp_assets.resources.tables import ensure_table, insert, replace_table_with


NOT_APPLICABLE = "not applicable"
NOT_YET = (
    "not evaluated yet: no predictions with actuals, or a champion never promoted through the gate"
)


NEW_DRIFT_COLUMNS = {
    "train_rows": "BIGINT", "recent_rows": "BIGINT", "status": "VARCHAR", "reason": "VARCHAR",
}  # fmt: skip


def drift_description(failing: pl.DataFrame, counts: dict) -> str:
    """One line for the drift check: the first failing feature and why, or what was reported."""
    if failing.height:
        first = failing.row(0, named=True)
        more = f" (+{failing.height - 1} more)" if failing.height > 1 else ""
        return one_line(
            f"{first['feature']}: {first['status']}, {first['reason']}{more}; retraining requested"
        )
    reported = ", ".join(f"{counts[s]} {s}" for s in monitoring.STATUSES if counts.get(s))
    return f"no feature drifted: {reported}"


def drift_metadata(measured: pl.DataFrame) -> dict:
    """The drift materialization's figures: features per status, and the largest PSI when any
    feature had one (none measured is no PSI, not a PSI of 0)."""
    counts = dict(measured["status"].value_counts().iter_rows())
    largest = measured["psi"].max()
    return {
        **({} if largest is None else {"max psi": MetadataValue.float(float(largest))}),
        **{f"features {s}": MetadataValue.int(counts.get(s, 0)) for s in monitoring.STATUSES},
    }


def not_applicable(reason: str) -> MaterializeResult:
    return MaterializeResult(metadata={NOT_APPLICABLE: MetadataValue.text(reason)})


def build_monitoring_assets(spec: PipelineSpec, common: dict) -> list:
    from dp_assets.analysis.factory import pipeline_asset, skipped, skipped_upstream

    name, task, key = spec.name, spec.task, spec.key
    primary, _ = PRIMARY[task]
    drift_key, live_key = AssetKey([name, "drift"]), AssetKey([name, "live_accuracy"])
    drift_table, live_table = f"{name}.drift", f"{name}.live_accuracy"

    @pipeline_asset(
        key=drift_key,
        description=f"Feature drift of {name}: each feature of "
        + (
            "the rows scored against the train split"
            if spec.snapshot
            else f"the latest {spec.drift_window_days} as-of days against the train split"
        )
        + ": PSI, a status (stable, drifted, feed break, expected to move, not evaluated) and "
        f"its reason, kept per measurement ({drift_table})",
        deps=[
            AssetKey([name, "features"]),
            *([] if spec.snapshot else [AssetKey([name, "sandbox"])]),
        ],
        kinds={"polars", "duckdb"},
        metadata=spec_metadata(DriftRow, drift_table),
        check_specs=[
            schema_check_spec(drift_key),
            AssetCheckSpec(
                "psi_below_threshold",
                asset=drift_key,
                description=f"No feature drifted (PSI above {spec.drift_threshold}) or broke (a "
                "unit change, a stuck sensor, values gone missing); seasonal and expected moves "
                "are reported, not failed (warns; a failure requests retraining)",
            ),
        ],
        **common,
    )
    def drift(context: AssetExecutionContext, warehouse: Warehouse):
        if reason := skipped_upstream(context, AssetKey([name, "features"])):
            yield skipped(reason)
            return
        examples = warehouse.query(f"SELECT * FROM {name}.features")
        train = examples.filter(pl.col("split") == "train")
        if spec.snapshot:
            recent = examples.filter(pl.col("split") == "score")
            if recent.is_empty():
                yield not_applicable(
                    "nothing is scored: every row of the sandbox is labelled, so there is no data "
                    "the model meets in use to compare with its training data"
                )
                return
        else:
            # What the model met in use: the examples of the latest days, labelled or not (the
            # features table keeps only the labelled ones and the latest day: for a 30-day
            # horizon that left a single day).
            built = spec.build_examples(warehouse.query(f"SELECT * FROM {name}.sandbox"))
            last = built["as_of"].max()
            recent = built.filter(
                pl.col("as_of") > pl.lit(last) - pl.duration(days=spec.drift_window_days)
            )
        features = spec.features_in(examples.columns)
        measured = monitoring.drift(
            train, recent, features,
            threshold=spec.drift_threshold, min_sample=spec.drift_min_sample,
            seasonal=spec.drift_seasonal, expected_to_move=spec.drift_expected_to_move,
            entity=spec.entity.column,
        ).with_columns(computed_at=pl.lit(dt.datetime.now(dt.UTC))).select(
            list(polars_schema(DriftRow))
        )  # fmt: skip
        counts = dict(measured["status"].value_counts().iter_rows())
        with warehouse.transaction() as conn:
            ensure_table(conn, drift_table, DriftRow)
            for column, kind in NEW_DRIFT_COLUMNS.items():  # a table from before the status
                conn.execute(f"ALTER TABLE {drift_table} ADD COLUMN IF NOT EXISTS {column} {kind}")
            insert(conn, drift_table, measured)
            materialization, check = stored_table_results(
                conn, drift_table, DriftRow, drift_key,
                **drift_metadata(measured),
            )  # fmt: skip
        worst = measured.sort("drifted", "psi", descending=True, nulls_last=True)
        failing = worst.filter("drifted")
        yield materialization
        yield check
        yield AssetCheckResult(
            check_name="psi_below_threshold",
            passed=failing.is_empty(),
            severity=AssetCheckSeverity.WARN,
            description=drift_description(failing, counts),
            metadata={
                "drifted features": MetadataValue.int(failing.height),
                "threshold": MetadataValue.float(spec.drift_threshold),
                "min sample": MetadataValue.int(spec.drift_min_sample),
                "features": markdown(
                    worst.select("feature", "status", "psi", "train_mean", "recent_mean", "reason"),
                    rows=worst.height,
                ),
            },
        )

    @pipeline_asset(
        key=live_key,
        description=f"Live accuracy of {name}: stored predictions (champion and shadow challenger) "
        f"joined with the actuals that arrived later, per as-of day ({live_table})",
        deps=[AssetKey([name, "predictions"]), AssetKey([name, "sandbox"])],
        kinds={"polars", "duckdb"},
        metadata=spec_metadata(LiveAccuracyRow, live_table),
        check_specs=[]
        if spec.snapshot
        else [
            schema_check_spec(live_key),
            AssetCheckSpec(
                "accuracy_holds",
                asset=live_key,
                description=f"Over the latest {spec.live_window_days} days with actuals, the "
                f"champion's {primary} is at most {spec.live_tolerance:.0%} worse than when it was "
                "evaluated (a failure starts retraining)",
            ),
        ],
        **common,
    )
    def live_accuracy(context: AssetExecutionContext, warehouse: Warehouse):
        if spec.snapshot:
            yield not_applicable(
                "a snapshot's labels do not arrive after its predictions: there are no actuals "
                "to compare them with"
            )
            return
        if reason := skipped_upstream(context, AssetKey([name, "predictions"])):
            yield skipped(reason)
            return
        with warehouse.get_connection() as conn:
            ensure_table(conn, f"{name}.predictions", spec.prediction_schema)
            ensure_table(conn, f"{name}.promotions", Promotion)
            predictions = conn.execute(f"SELECT * FROM {name}.predictions").pl()
            sandbox = conn.execute(f"SELECT * FROM {name}.sandbox").pl()
            evaluated = dict(
                conn.execute(
                    f"SELECT challenger_version, arg_max(challenger_value, decided_at) "
                    f"FROM {name}.promotions WHERE promoted GROUP BY 1"
                ).fetchall()
            )
        # The labels as the pipeline defines them, for every day the data now covers.
        actuals = (
            spec.build_examples(sandbox)
            .select(*key, pl.col("label").cast(pl.Float64))
            .with_columns(pl.col(key[0]).cast(pl.String))
            .drop_nulls()
            if not sandbox.is_empty()
            else pl.DataFrame(schema={key[0]: pl.String, "as_of": pl.Date, "label": pl.Float64})
        )
        daily = monitoring.live_accuracy(task, predictions, actuals, key)
        days = daily["as_of"].unique().sort()[-spec.live_window_days :]
        window = predictions.filter(pl.col("as_of").is_in(days.implode()))
        shadowed = window.filter(pl.col("challenger_prediction").is_not_null())
        live = monitoring.pooled(task, window, actuals, "champion", key)
        versions = window["model_version"].unique().sort()
        at_evaluation = evaluated.get(versions[-1]) if versions.len() else None
        change = improvement(task, live[primary], at_evaluation) if live and at_evaluation else None
        with warehouse.transaction() as conn:
            replace_table_with(conn, live_table, daily)
            materialization, check = stored_table_results(
                conn, live_table, LiveAccuracyRow, live_key,
                window=f"{days.min()}..{days.max()}" if days.len() else "no actuals yet",
                **{f"champion live {m}": MetadataValue.int(v) if m == "rows" else
                   MetadataValue.float(round(v, 6)) for m, v in live.items()},
                **shadow_comparison(task, shadowed, actuals),
                # Nothing measured is not a pass: the check reports once actuals meet a champion.
                **({"accuracy_holds": NOT_YET} if change is None else {}),
            )  # fmt: skip
        yield materialization
        yield check
        if change is not None:
            yield AssetCheckResult(
                check_name="accuracy_holds",
                passed=change >= -spec.live_tolerance,
                metadata={
                    f"live {primary}": MetadataValue.float(live[primary]),
                    f"{primary} at evaluation": MetadataValue.float(at_evaluation),
                    "relative change": MetadataValue.float(round(change, 4)),
                    "tolerance": MetadataValue.float(spec.live_tolerance),
                },
            )

    def shadow_comparison(task: str, shadowed: pl.DataFrame, actuals: pl.DataFrame) -> dict:
        """Champion and shadow challenger on the same predictions with actuals: live A/B evidence."""
        both = {
            m: monitoring.pooled(task, shadowed, actuals, m, key)
            for m in ("champion", "challenger")
        }
        if not both["champion"]:
            return {"shadow comparison": "no shadow predictions with actuals"}
        return {
            "shadow rows": MetadataValue.int(both["champion"]["rows"]),
            f"shadow champion {primary}": MetadataValue.float(round(both["champion"][primary], 6)),
            f"shadow challenger {primary}": MetadataValue.float(
                round(both["challenger"][primary], 6)
            ),
            "challenger vs champion (live)": MetadataValue.float(
                round(improvement(task, both["challenger"][primary], both["champion"][primary]), 4)
            ),
        }

    return [drift, live_accuracy]
