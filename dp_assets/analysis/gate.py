"""The champion/challenger gate (pure): promote only what beats the baseline and the champion."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp_assets.analysis.metrics import PRIMARY, improvement
from dp_assets.analysis.spec import Gate


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    vs_baseline: float
    vs_champion: float | None


def decide(
    task: str, gate: Gate, challenger: float, baseline: float, champion: float | None
) -> Decision:
    metric = PRIMARY[task][0]
    if not math.isfinite(challenger):
        return Decision(
            False, f"challenger {metric} is not finite ({challenger})", float("nan"), None
        )
    vs_baseline = improvement(task, challenger, baseline)
    vs_champion = None if champion is None else improvement(task, challenger, champion)
    failures = []
    if vs_baseline < gate.min_improvement_vs_baseline:
        failures.append(
            f"improves {metric} over the baseline by {vs_baseline:.1%} "
            f"(challenger {challenger:.4f}, baseline {baseline:.4f}), needs {gate.min_improvement_vs_baseline:.0%}"
        )
    if vs_champion is not None and vs_champion < gate.min_improvement_vs_champion:
        failures.append(
            f"improves {metric} over the champion by {vs_champion:.1%} "
            f"(challenger {challenger:.4f}, champion {champion:.4f}), needs {gate.min_improvement_vs_champion:.0%}"
        )
    if failures:
        return Decision(False, "not promoted: " + "; ".join(failures), vs_baseline, vs_champion)
    against = "baseline" if champion is None else "baseline and champion"
    return Decision(
        True,
        f"promoted: beats the {against} on {metric} by the required margins",
        vs_baseline,
        vs_champion,
    )
