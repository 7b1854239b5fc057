"""Metrics of a model on the validation window (numpy and scikit-learn; no Dagster, no MLflow)."""

from __future__ import annotations

import numpy as np
import polars as pl

PRIMARY = {"regression": ("mae", "lower"), "classification": ("roc_auc", "higher")}


def regression(y: np.ndarray, p: np.ndarray, **_) -> dict[str, float]:
    error = p - y
    nonzero = np.abs(y) > 1e-9
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error[nonzero] / y[nonzero])))
        if nonzero.any()
        else float("nan"),
    }


def classification(y: np.ndarray, p: np.ndarray, k: int = 20) -> dict[str, float]:
    # Imported here: scikit-learn takes seconds to import, and every process that loads the
    # definitions (each run, sensor tick, CLI call) would pay for it.
    from sklearn.metrics import log_loss, roc_auc_score

    both = len(np.unique(y)) == 2
    top = np.argsort(-p, kind="stable")[: min(k, len(p))]
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "precision_at_k": float(np.mean(y[top])) if len(top) else float("nan"),
    }


METRICS = {"regression": regression, "classification": classification}


def improvement(task: str, challenger: float, other: float) -> float:
    """Relative improvement of the challenger over another predictor on the primary metric."""
    if PRIMARY[task][1] == "lower":
        return (other - challenger) / other if other else 0.0
    return (challenger - other) / (1 - other) if other < 1 else 0.0


def by_segment(task: str, frame: pl.DataFrame, segments: tuple[str, ...], k: int) -> list[dict]:
    """Metrics overall and per segment value: rows of (segment_column, segment, metric, value, rows)."""
    groups = [("all", "all", frame)]
    for column in segments:
        groups += [
            (column, str(value), part)
            for (value,), part in frame.group_by(column, maintain_order=True)
        ]
    rows = []
    for column, value, part in sorted(groups, key=lambda g: (g[0] != "all", g[0], g[1])):
        for metric, result in METRICS[task](
            part["label"].to_numpy(), part["prediction"].to_numpy(), k=k
        ).items():
            rows.append({"segment_column": column, "segment": value, "metric": metric,
                         "value": None if np.isnan(result) else result, "rows": part.height})  # fmt: skip
    return rows
