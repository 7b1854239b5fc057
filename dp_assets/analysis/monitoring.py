"""Model monitoring (pure: frames in, frames out): feature drift, live accuracy, segment gaps."""

from __future__ import annotations

import numpy as np
import polars as pl

from dp_assets.analysis.metrics import METRICS, PRIMARY, improvement

BINS = 10
EPSILON = 1e-4  # an empty bin would make the index infinite


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = BINS) -> float:
    """Population stability index of ``actual`` against ``expected``: bins at the deciles of
    ``expected`` (fewer where values repeat), missing values in a bin of their own."""
    expected, actual = np.asarray(expected, float), np.asarray(actual, float)
    known = expected[~np.isnan(expected)]
    edges = np.unique(np.quantile(known, np.linspace(0, 1, bins + 1))[1:-1]) if known.size else []

    def shares(values: np.ndarray) -> np.ndarray:
        missing = np.isnan(values)
        counts = np.bincount(np.digitize(values[~missing], edges), minlength=len(edges) + 1)
        counts = np.append(counts, missing.sum())
        return np.clip(counts / max(len(values), 1), EPSILON, None)

    e, a = shares(expected), shares(actual)
    return float(np.sum((a - e) * np.log(a / e)))


def drift(examples: pl.DataFrame, features: list[str], window_days: int | None) -> pl.DataFrame:
    """PSI per feature: the train split against the latest ``window_days`` as-of days, or (a
    snapshot: ``window_days`` None) against the rows scored. A categorical feature's bins are
    its values: it is compared through their frequency rank in training."""
    train = examples.filter(pl.col("split") == "train")
    if window_days is None:
        recent = examples.filter(pl.col("split") == "score")

        def window(frame: pl.DataFrame) -> str:
            return f"{frame['split'].first()} split, {frame.height} rows"
    else:
        last = examples["as_of"].max()
        recent = examples.filter(pl.col("as_of") > pl.lit(last) - pl.duration(days=window_days))

        def window(frame: pl.DataFrame) -> str:
            return f"{frame['as_of'].min()}..{frame['as_of'].max()}"

    def numeric(f: str) -> tuple[pl.Series, pl.Series]:
        if examples.schema[f] in (pl.String, pl.Categorical):
            codes = train[f].value_counts(sort=True).with_row_index("code").select(f, "code")
            return tuple(
                frame.select(pl.col(f).replace_strict(codes[f], codes["code"], default=len(codes),
                                                      return_dtype=pl.Float64)).to_series()
                for frame in (train, recent)
            )  # fmt: skip
        return train[f].cast(pl.Float64), recent[f].cast(pl.Float64)

    rows = []
    for f in features:
        expected, actual = numeric(f)
        rows.append({
            "feature": f,
            "psi": round(psi(expected.to_numpy(), actual.to_numpy()), 6),
            "train_mean": expected.mean(),
            "recent_mean": actual.mean(),
            "train_window": window(train),
            "recent_window": window(recent),
        })  # fmt: skip
    return pl.DataFrame(rows)


SHADOWED = {"champion": ("prediction", "model_version"),
            "challenger": ("challenger_prediction", "challenger_version")}  # fmt: skip


def live_accuracy(
    task: str, predictions: pl.DataFrame, actuals: pl.DataFrame, key: list[str]
) -> pl.DataFrame:
    """Metrics per as-of day, model and version of stored predictions that now have an actual.

    ``actuals`` holds (*key, label), key being the entity and as_of; a prediction whose label is
    not known yet is left out until it is.
    """
    joined = predictions.join(actuals, on=key, how="inner")
    rows = []
    for model, (predicted, version) in SHADOWED.items():
        scored = joined.filter(pl.col(predicted).is_not_null())
        for (as_of, model_version), part in scored.group_by("as_of", version):
            for metric, value in METRICS[task](
                part["label"].to_numpy(), part[predicted].to_numpy()
            ).items():
                rows.append({"as_of": as_of, "model": model, "model_version": model_version,
                             "metric": metric, "value": None if np.isnan(value) else value,
                             "rows": part.height})  # fmt: skip
    return pl.DataFrame(rows, schema=_LIVE_SCHEMA).sort("as_of", "model", "metric")


_LIVE_SCHEMA = {"as_of": pl.Date, "model": pl.String, "model_version": pl.Int64,
                "metric": pl.String, "value": pl.Float64, "rows": pl.Int64}  # fmt: skip


def pooled(
    task: str, predictions: pl.DataFrame, actuals: pl.DataFrame, model: str, key: list[str]
) -> dict:
    """One model's metrics over all the given predictions with actuals (rows pooled, not averaged)."""
    predicted, _ = SHADOWED[model]
    joined = predictions.join(actuals, on=key).filter(pl.col(predicted).is_not_null())
    if joined.is_empty():
        return {}
    return METRICS[task](joined["label"].to_numpy(), joined[predicted].to_numpy()) | {
        "rows": joined.height
    }


def segment_gaps(task: str, evaluation: pl.DataFrame, min_rows: int) -> pl.DataFrame:
    """The challenger's primary metric per segment against overall, worst first: ``gap`` is how
    much worse (relative, as the gate measures improvement) the segment is than overall."""
    primary, _ = PRIMARY[task]
    mine = evaluation.filter((pl.col("model") == "challenger") & (pl.col("metric") == primary))
    overall = mine.filter(pl.col("segment_column") == "all")["value"].item()
    segments = mine.filter(
        (pl.col("segment_column") != "all")
        & (pl.col("rows") >= min_rows)
        & pl.col("value").is_not_null()
    )
    return (
        segments.select("segment_column", "segment", "rows", "value")
        .with_columns(
            overall=pl.lit(overall),
            gap=pl.col("value").map_elements(lambda v: -improvement(task, v, overall), pl.Float64),
        )
        .sort("gap", descending=True)
    )
