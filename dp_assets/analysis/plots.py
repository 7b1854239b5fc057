"""Evaluation and report plots as PNG bytes (pure: arrays in, images out)."""

from __future__ import annotations

import io

import numpy as np


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    # A tight box keeps a legend placed outside the axes in the image.
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _figure(ncols: int = 1, width: float | None = None, height: float = 4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width or 5 * ncols, height))


def feature_importance(names: list[str], gains: np.ndarray, top: int = 15) -> bytes:
    """The ``top`` features by their share of the model's total gain."""
    gains = np.asarray(gains, dtype=float)
    shares = gains / gains.sum() if gains.sum() else gains
    order = np.argsort(-shares)[:top]
    return bars(
        "Feature importance (share of total gain)", "share of total gain",
        [names[i] for i in order], shares[order].tolist(), percent=True,
    )  # fmt: skip


def residuals(y: np.ndarray, p: np.ndarray) -> bytes:
    fig, (scatter, hist) = _figure(2)
    scatter.scatter(y, p, s=4, alpha=0.4)
    low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    scatter.plot([low, high], [low, high], color="black", linewidth=1)
    scatter.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual")
    hist.hist(p - y, bins=50)
    hist.set(xlabel="predicted - actual", title="Residuals")
    return _png(fig)


def roc_and_calibration(y: np.ndarray, p: np.ndarray) -> bytes:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    fig, (roc, calibration) = _figure(2)
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        roc.plot(fpr, tpr)
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        calibration.plot(predicted, observed, marker="o")
    roc.plot([0, 1], [0, 1], color="black", linewidth=1)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    calibration.plot([0, 1], [0, 1], color="black", linewidth=1)
    calibration.set(xlabel="predicted probability", ylabel="observed rate", title="Calibration")
    return _png(fig)


def over_time(
    title: str, ylabel: str, frame, x: str, y: str, by: str, percent: bool = False, dashed=()
) -> bytes:
    """One line per value of ``by`` (a polars frame's columns ``x``, ``y``, ``by``) on a date
    axis; the legend sits right of the plot, never over the lines. ``percent`` labels y as
    percentages; the series named in ``dashed`` are drawn dashed (e.g. a backtest before live)."""
    from matplotlib import dates, ticker

    fig, ax = _figure(width=9)
    for (name,), part in frame.sort(by, x).group_by(by, maintain_order=True):  # stable colours
        ax.plot(part[x].to_list(), part[y].to_list(), marker="o", markersize=3, label=str(name),
                linestyle="--" if name in dashed else "-")  # fmt: skip
    locator = dates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    if percent:
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=1))
    ax.set(title=title, ylabel=ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if frame.height:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return _png(fig)


def bars(
    title: str,
    xlabel: str,
    labels: list[str],
    values: list[float],
    flagged=(),
    threshold=None,
    percent: bool = False,
) -> bytes:
    """Horizontal bars, largest on top, each labelled with its value (as a percentage with
    ``percent``); ``flagged`` bars in red, ``threshold`` a dashed vertical line (e.g. the PSI
    above which a feature counts as drifted)."""
    fig, ax = _figure(width=8, height=max(2.5, 0.35 * len(labels) + 1.2))
    order = np.argsort(values)
    names, heights = np.array(labels)[order], np.array(values, dtype=float)[order]
    colors = ["#c0392b" if n in flagged else "#4c78a8" for n in names]
    drawn = ax.barh(names, heights, color=colors)
    text = [f"{v:.1%}" if percent else readable(v) for v in heights]
    ax.bar_label(drawn, labels=text, padding=3, fontsize=8)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
        ax.text(threshold, len(names) - 0.4, f" threshold {readable(threshold)}", fontsize=8)
    ax.set(title=title, xlabel=xlabel)
    if percent:
        from matplotlib import ticker

        ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    ax.set_xlim(right=max([*heights, threshold or 0]) * 1.25 or 1)
    return _png(fig)


def readable(value: float) -> str:
    """A number as people read it: thousands separated, a few significant digits, never
    scientific notation (42,986 and 0.0054, not 4.299e+04 and 5.435e-03)."""
    if not np.isfinite(value):
        return "n/a" if np.isnan(value) else str(value)
    size = abs(value)
    if size >= 1000 or value == int(value):
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:,.1f}"
    if size >= 0.01:
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{value:.2g}" if size >= 1e-4 else "0"


PLOTS = {"regression": residuals, "classification": roc_and_calibration}
