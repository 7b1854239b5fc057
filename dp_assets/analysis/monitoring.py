"""Model monitoring (pure: frames in, frames out): feature drift, live accuracy, segment gaps."""

from __future__ import annotations

import numpy as np
import polars as pl

from dp_assets.analysis.metrics import METRICS, PRIMARY, improvement

BINS = 10
# A feed break is what a season never does: change a feature's units (its spread, or its level
# in training spreads, by an order of magnitude), or stop it varying for most entities at once.
SPREAD_FACTOR = 10.0
STUCK_RISE = 0.5  # share of entities with one unchanging value over the window, above training's
BREAK_MIN_ROWS = 30  # those signatures are orders of magnitude: a few dozen rows show them
SAME = 1e-6  # relative: values of a feature closer than this are one value, not a shift
STATUSES = ("stable", "drifted", "feed break", "expected to move", "not evaluated")


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = BINS) -> float:
    """Population stability index of ``actual`` against ``expected``.

    Bins at the deciles of ``expected``'s known values (fewer where values repeat), each edge
    halfway between two values ``expected`` holds, so a value it holds never sits on an edge and
    a near-constant feature is one bin, not a bin boundary rounding can cross; a constant one is
    the bin within ``SAME`` (relative) of its value, with one bin below and one above it, so
    moving off it is a shift. Missing values are
    a bin of their own. A bin empty in one window weighs half a row of that window (the least it
    could hold short of nothing) instead of a fixed 1e-4, which made the index of a few emptied
    bins 5 to 10 whatever the sample size; a bin empty in both says nothing and is left out.
    """
    expected, actual = np.asarray(expected, float), np.asarray(actual, float)
    edges = _edges(expected[~np.isnan(expected)], bins)
    return _index(_counts(expected, edges), _counts(actual, edges))


def _edges(known: np.ndarray, bins: int) -> np.ndarray:
    values = np.unique(known)
    if values.size == 1:
        return values[0] + np.array([-1, 1]) * _tolerance(values[0])
    if values.size == 0:
        return np.array([])
    at = np.quantile(known, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf")
    above = np.searchsorted(values, at, side="right")
    inside = above < values.size  # a decile at the largest value has nothing above it
    return np.unique((at[inside] + values[above[inside]]) / 2)


def _tolerance(value: float) -> float:
    return SAME * max(abs(value), 1.0)


def _counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    missing = np.isnan(values)
    counts = np.bincount(np.digitize(values[~missing], edges), minlength=len(edges) + 1)
    return np.append(counts, missing.sum())


def _index(expected: np.ndarray, actual: np.ndarray) -> float:
    used = (expected > 0) | (actual > 0)
    e = np.maximum(expected[used], 0.5) / max(expected.sum(), 1)
    a = np.maximum(actual[used], 0.5) / max(actual.sum(), 1)
    return float(np.sum((a - e) * np.log(a / e)))


def drift(
    train: pl.DataFrame,
    recent: pl.DataFrame,
    features: list[str],
    *,
    threshold: float,
    min_sample: int,
    seasonal: tuple[str, ...] = (),
    expected_to_move: tuple[str, ...] = (),
    entity: str | None = None,
) -> pl.DataFrame:
    """Each feature of ``recent`` (the rows the model meets in use) against ``train`` (the rows it
    learned from): PSI, means, the windows compared, rows, a ``status`` (``STATUSES``), its
    ``reason`` and ``drifted`` (the status fails the check: drifted or feed break).

    - A feed break fails whatever the feature (given ``BREAK_MIN_ROWS`` rows in each window): a
      unit change (its spread ``SPREAD_FACTOR`` times larger or smaller than in training, or its
      mean moved by more than that many training spreads; for a feature constant in training,
      most recent values off that value), a stuck sensor (the share of ``entity`` values unchanged over a week up by
      ``STUCK_RISE``; without an entity, one value in every recent row), or a rise of missing
      values whose index is above ``threshold``.
    - PSI needs ``min_sample`` observations in each window, else the feature is not evaluated:
      entities for a time series (a customer's days are one trajectory: a persistent feature such
      as tenure has one observation per customer, not per day), rows for a snapshot. A numeric
      feature of a time series with more than ``BINS`` values in training also needs as many
      distinct (as_of, value) pairs: entities sharing a value on a day, a region's weather, are
      one observation (never so for a snapshot's rows or a categorical's levels).
    - A ``seasonal`` feature of a time series (frames with ``as_of``) is compared with the
      training rows of the same calendar days of earlier years; when training holds too few of
      them, and for a feature ``expected_to_move`` (a tariff revised monthly), the PSI against the
      whole training is reported as expected to move, never failing.
    - Otherwise PSI above ``threshold`` is drifted. PSI is measured on known values: fewer missing
      values than in training is history filling up (lags and rolling windows), not drift.

    A categorical feature's bins are its values: it is compared through their frequency rank in
    training (a value training never saw ranks after all of them).
    """
    series = "as_of" in train.columns and "as_of" in recent.columns
    rows = []
    for f in features:
        reference, compared, moving = train, "whole training", None
        if series and f in seasonal:
            same = same_days_earlier(train, recent)
            if _sample(same, entity) >= min_sample:
                reference, compared = same, "the same calendar days of an earlier year"
            else:
                moving = (
                    f"seasonal, and training holds {same.height} rows of these calendar days "
                    "in an earlier year"
                )
        elif f in expected_to_move:
            moving = "declared expected to move"
        expected, actual = _numeric(f, train, reference, recent)
        status, reason = _judge(
            f, reference, recent, expected, actual, threshold, min_sample,
            entity if series else None, categorical=train.schema[f] in (pl.String, pl.Categorical),
            series=series,
        )  # fmt: skip
        value = None
        if status != "not evaluated":
            value = round(psi(_known(expected), _known(actual)), 6)
        if not status:
            status, reason = _verdict(value, threshold, moving, compared)
        rows.append({
            "feature": f,
            "psi": value,
            "train_mean": _mean(expected),
            "recent_mean": _mean(actual),
            "train_window": _window(reference, series),
            "recent_window": _window(recent, series),
            "train_rows": reference.height,
            "recent_rows": recent.height,
            "status": status,
            "reason": reason,
            "drifted": status in ("drifted", "feed break"),
        })  # fmt: skip
    return pl.DataFrame(rows, schema=_DRIFT_SCHEMA)


def _mean(values: np.ndarray) -> float | None:
    known = values[~np.isnan(values)]
    return float(known.mean()) if known.size else None


_DRIFT_SCHEMA = {"feature": pl.String, "psi": pl.Float64, "train_mean": pl.Float64,
                 "recent_mean": pl.Float64, "train_window": pl.String, "recent_window": pl.String,
                 "train_rows": pl.Int64, "recent_rows": pl.Int64, "status": pl.String,
                 "reason": pl.String, "drifted": pl.Boolean}  # fmt: skip


def same_days_earlier(train: pl.DataFrame, recent: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``train`` on the calendar days ``recent`` spans, in any earlier year."""
    first, last = recent["as_of"].min(), recent["as_of"].max()
    years = range(1, first.year - train["as_of"].min().year + 2)
    on = pl.any_horizontal(
        pl.col("as_of").is_between(
            pl.lit(first).dt.offset_by(f"-{k}y"), pl.lit(last).dt.offset_by(f"-{k}y")
        )
        for k in years
    ) if years else pl.lit(False)  # fmt: skip
    return train.filter(on)


def _numeric(f: str, train, reference, recent) -> tuple[np.ndarray, np.ndarray]:
    """``f`` of ``reference`` and ``recent`` as floats (a categorical: its rank in ``train``)."""
    if train.schema[f] in (pl.String, pl.Categorical):
        codes = train[f].value_counts(sort=True).with_row_index("code").select(f, "code")
        return tuple(
            frame.select(pl.col(f).replace_strict(codes[f], codes["code"], default=len(codes),
                                                  return_dtype=pl.Float64)).to_series().to_numpy()
            for frame in (reference, recent)
        )  # fmt: skip
    return tuple(frame[f].cast(pl.Float64).to_numpy() for frame in (reference, recent))


def _known(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def _judge(f, reference, recent, expected, actual, threshold, min_sample, entity, categorical,
           series):  # fmt: skip
    """(status, reason) before PSI: the feed-break signatures, then whether the samples are large
    enough for a PSI; ("", "") when they are."""
    if reference.height < BREAK_MIN_ROWS or recent.height < BREAK_MIN_ROWS:
        return "not evaluated", (
            f"{recent.height} rows in the recent window and {reference.height} in training"
        )
    if broken := _feed_break(
        f, reference, recent, expected, actual, threshold, entity, categorical
    ):
        return "feed break", broken
    unit = f"{entity} values" if entity else "rows"
    if (least := min(_sample(reference, entity), _sample(recent, entity))) < min_sample:
        return (
            "not evaluated",
            f"{least} {unit} in a window: fewer than the {min_sample} a PSI needs",
        )
    # In a time series, a value the entities share on a day (a region's weather) is one
    # observation, not one per entity. Only there: rows of a snapshot sharing an age are separate
    # people, and a categorical's or a code's few values (at most BINS: a weekday) are its bins.
    if series and not categorical and np.unique(_known(expected)).size > BINS:
        pairs = min(_day_values(reference, f), _day_values(recent, f))
        if pairs < min_sample:
            return "not evaluated", (
                f"{pairs} distinct (as_of, value) pairs in a window (entities sharing a value on "
                f"a day, like a region's weather, count once): fewer than {min_sample}"
            )
    return "", ""


def _day_values(frame: pl.DataFrame, f: str) -> int:
    return frame.drop_nulls(f).select("as_of", f).n_unique()


def _sample(frame: pl.DataFrame, entity: str | None) -> int:
    return frame[entity].n_unique() if entity else frame.height


def _feed_break(f, reference, recent, expected, actual, threshold, entity, categorical) -> str:
    """Why ``recent`` looks like a broken feed rather than a changed world, or ""."""
    e_missing, a_missing = np.isnan(expected), np.isnan(actual)
    missing = _index(np.array([(~e_missing).sum(), e_missing.sum()]),
                     np.array([(~a_missing).sum(), a_missing.sum()]))  # fmt: skip
    if a_missing.mean() > e_missing.mean() and missing > threshold:
        return f"missing values rose from {e_missing.mean():.0%} to {a_missing.mean():.0%}"
    known_e, known_a = expected[~e_missing], actual[~a_missing]
    if not categorical and known_e.size and known_a.size:
        spread_e, spread_a = _spread(known_e), _spread(known_a)
        # New units put most values outside what training held; a week of one series is narrower
        # than years of it (a day of the year), but inside them.
        low, high = np.quantile(known_e, [0.01, 0.99])
        outside = np.mean((known_a < low) | (known_a > high)) > 0.5
        # A spread of zero is no unit: a stuck feed, told by the entities below.
        if (
            outside
            and spread_e > 0
            and spread_a > 0
            and not 1 / SPREAD_FACTOR < spread_a / spread_e < SPREAD_FACTOR
        ):
            return f"spread {spread_a / spread_e:.3g} times training's: a unit change"
        moved = abs(known_a.mean() - known_e.mean()) / spread_e if spread_e > 0 else 0.0
        if outside and moved > SPREAD_FACTOR:  # a season moves a level by a few spreads
            return (
                f"level moved {moved:.3g} training spreads (mean {known_e.mean():.4g} -> "
                f"{known_a.mean():.4g}): a unit change"
            )
        # A feature (nearly) constant in training has no spread to measure a unit by: most
        # recent values off that value is the break.
        if spread_e == 0:
            held = float(np.median(known_e))
            off = np.mean(np.abs(known_a - held) > _tolerance(held))
            if off > 0.5:
                return (
                    f"training held one value, {held:.6g}; {off:.0%} of recent values differ "
                    f"(mean {known_a.mean():.4g}): a unit change or a new feed"
                )
        if spread_e > 0 and spread_a == 0 and entity is None:
            return f"stuck: every recent row holds {known_a[0]:.6g}"
    if entity is not None:
        (stuck_e, varies), (stuck_a, _) = (
            _unchanged(reference, f, entity),
            _unchanged(recent, f, entity),
        )
        # Only a feature that changes most days can get stuck: a monthly price holds for weeks.
        if varies >= 3 and stuck_a - stuck_e >= STUCK_RISE:
            return (
                f"stuck: {stuck_a:.0%} of {entity} values unchanged over a week "
                f"(training: {stuck_e:.0%})"
            )
    return ""


def _spread(values: np.ndarray) -> float:
    """Standard deviation within the 1st..99th percentiles: a few glitches do not make a unit."""
    low, high = np.quantile(values, [0.01, 0.99])
    return 0.0 if low == high else float(np.std(values[(values >= low) & (values <= high)]))


def _unchanged(frame: pl.DataFrame, f: str, entity: str) -> tuple[float, float]:
    """Of the (entity, week)s with at least three known values: the share whose values are all
    the same, and the median number of distinct values."""
    groups = (
        frame.drop_nulls(f)
        .group_by(entity, pl.col("as_of").dt.truncate("1w"))
        .agg(n=pl.len(), distinct=pl.col(f).n_unique())
        .filter(pl.col("n") >= 3)
    )
    if groups.is_empty():
        return 0.0, 0.0
    return float((groups["distinct"] == 1).mean()), float(groups["distinct"].median())


def _verdict(value: float, threshold: float, moving: str | None, compared: str) -> tuple[str, str]:
    if moving:
        return "expected to move", f"{moving}: PSI {value:.3g} reported, never failing"
    if value > threshold:
        return "drifted", f"PSI {value:.3g} against {compared}, above {threshold}"
    return "stable", f"PSI {value:.3g} against {compared}, at most {threshold}"


def _window(frame: pl.DataFrame, series: bool) -> str:
    if not series:
        split = f"{frame['split'].first()} split, " if "split" in frame.columns else ""
        return f"{split}{frame.height} rows"
    return f"{frame['as_of'].min()}..{frame['as_of'].max()}"


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
