"""What an analytical pipeline is: a small spec the factory turns into a chain of assets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandera.polars as pa
import polars as pl

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class Gate:
    """How much better than the baseline and the current champion a challenger must be.

    Improvements are relative, on the primary metric of the task (MAE for regression, ROC AUC for
    classification): 0.15 means 15% lower MAE, or an AUC 15% of the way from the other's to 1.
    """

    min_improvement_vs_baseline: float
    min_improvement_vs_champion: float = 0.0


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    description: str
    task: Task
    sandbox_query: str  # SQL over the exploitation zone; its result is the pipeline's sandbox
    sandbox_deps: tuple[tuple[str, ...], ...]  # asset keys the query reads
    sandbox_schema: type[pa.DataFrameModel]
    build_examples: Callable[[pl.DataFrame], pl.DataFrame]  # sandbox -> Example columns but split
    horizon_days: int  # how far past the as-of day a label looks
    features_schema: type[pa.DataFrameModel]  # Example plus the feature columns, described
    baseline: Callable[
        [pl.DataFrame, pl.DataFrame], np.ndarray
    ]  # (train, examples) -> naive predictions
    gate: Gate
    validation_days: int = 14  # the most recent labelled as-of days are the validation window
    lgbm_params: dict = field(default_factory=dict)
    num_boost_round: int = 300
    # Feature -> +1 or -1: a LightGBM monotone constraint (the prediction only rises, or falls).
    monotone: dict[str, int] = field(default_factory=dict)
    precision_at_k: int = 20  # classification: how many top-scored customers count
    segments: tuple[str, ...] = ("region", "tariff")
    # Evaluation warns when the challenger's primary metric in a segment (with at least
    # min_segment_rows examples) is more than max_segment_gap (relative) worse than overall.
    max_segment_gap: float = 0.5
    min_segment_rows: int = 30
    # Monitoring: PSI of each feature, training window against the latest drift_window_days;
    # live accuracy over the latest live_window_days with actuals may be live_tolerance (relative)
    # worse than at evaluation before its check fails.
    drift_threshold: float = 0.25
    drift_window_days: int = 7
    live_window_days: int = 7
    live_tolerance: float = 0.25
    # (asset, check) under the pipeline whose failure starts a retraining: the monitoring signals.
    retrain_on: tuple[tuple[str, str], ...] = (
        ("drift", "psi_below_threshold"),
        ("live_accuracy", "accuracy_holds"),
    )
    owner: str = "team:data-science"
    # Feature or label -> the sandbox columns it is computed from (dagster/column_lineage);
    # customer_id, region and tariff come from their namesakes, as_of from day.
    lineage: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def column_lineage(self) -> dict[str, tuple[str, ...]]:
        sandbox = f"{self.name}/sandbox"
        given = {"customer_id": ("customer_id",), "as_of": ("day",), "region": ("region",),
                 "tariff": ("tariff",)} | self.lineage  # fmt: skip
        return {
            column: tuple(f"{sandbox}.{c}" for c in sources) for column, sources in given.items()
        }

    def training_params(self, seed: int) -> dict:
        """LightGBM parameters: the spec's, made deterministic (same data and seed, same model)."""
        return {
            "seed": seed, "deterministic": True, "force_row_wise": True, "num_threads": 2, "verbose": -1,
            **self.lgbm_params,
            **({"monotone_constraints": [self.monotone.get(c, 0) for c in self.feature_columns],
                "monotone_constraints_method": "advanced"} if self.monotone else {}),
        }  # fmt: skip

    @property
    def feature_columns(self) -> list[str]:
        from dp_assets.analysis.schema import Example

        shared = set(Example.to_schema().columns)
        return [c for c in self.features_schema.to_schema().columns if c not in shared]
