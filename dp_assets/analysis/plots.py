"""Evaluation plots as PNG bytes (pure: arrays in, images out)."""

from __future__ import annotations

import io

import numpy as np


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _figure(ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(5 * ncols, 4))


def feature_importance(names: list[str], gains: np.ndarray) -> bytes:
    fig, ax = _figure()
    order = np.argsort(gains)
    ax.barh(np.array(names)[order], gains[order])
    ax.set_title("Feature importance (gain)")
    return _png(fig)


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


def over_time(title: str, ylabel: str, frame, x: str, y: str, by: str) -> bytes:
    """One line per value of ``by`` (a polars frame's columns ``x``, ``y``, ``by``)."""
    fig, ax = _figure()
    for (name,), part in frame.sort(x).group_by(by, maintain_order=True):
        ax.plot(part[x].to_list(), part[y].to_list(), marker="o", markersize=3, label=str(name))
    ax.set(title=title, ylabel=ylabel)
    ax.tick_params(axis="x", labelrotation=30)
    if frame.height:
        ax.legend(fontsize=7)
    return _png(fig)


PLOTS = {"regression": residuals, "classification": roc_and_calibration}
