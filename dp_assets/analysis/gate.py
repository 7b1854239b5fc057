"""The champion/challenger gate (pure): promote only what beats the baseline and the champion.

A challenger that ties the champion (the same primary metric, up to rounding) is not promoted,
whatever margin the gate asks: swapping the served model would change nothing but its version.
``Decision.settled`` tells the promotion check that keeping the champion is nothing to act on
(a tie, or the challenger is the champion already and still clears the baseline margin); a
challenger rejected for doing worse is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp_assets.analysis.metrics import PRIMARY, improvement
from dp_assets.analysis.spec import Gate

# Metrics computed twice from the same predictions agree to the last digit; this only absorbs the
# last bits of a float summed in another order.
TIE_REL_TOL = 1e-9


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    vs_baseline: float
    vs_champion: float | None
    settled: bool = False  # not promoted, and nothing for a person to do about it


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
    if short := _short_of_baseline(metric, gate, vs_baseline, challenger, baseline):
        failures.append(short)
    tie = champion is not None and math.isclose(challenger, champion, rel_tol=TIE_REL_TOL)
    if tie:
        failures.append(f"ties the champion on {metric} ({challenger:.4f})")
    elif vs_champion is not None and vs_champion < gate.min_improvement_vs_champion:
        failures.append(
            f"improves {metric} over the champion by {vs_champion:.1%} "
            f"(challenger {challenger:.4f}, champion {champion:.4f}), needs {gate.min_improvement_vs_champion:.0%}"
        )
    if failures:
        return Decision(
            False,
            "not promoted: " + "; ".join(failures),
            vs_baseline,
            vs_champion,
            # Only the tie: the champion is as good as the challenger on the same data.
            settled=tie and len(failures) == 1,
        )
    against = "baseline" if champion is None else "baseline and champion"
    return Decision(
        True,
        f"promoted: beats the {against} on {metric} by the required margins",
        vs_baseline,
        vs_champion,
    )


def _short_of_baseline(
    metric: str, gate: Gate, vs_baseline: float, challenger: float, baseline: float
) -> str | None:
    """How the challenger falls short of the baseline margin, or None when it clears it."""
    if vs_baseline >= gate.min_improvement_vs_baseline:
        return None
    return (
        f"improves {metric} over the baseline by {vs_baseline:.1%} "
        f"(challenger {challenger:.4f}, baseline {baseline:.4f}), needs {gate.min_improvement_vs_baseline:.0%}"
    )


def already_champion(
    task: str, gate: Gate, version: int | str, challenger: float, baseline: float
) -> Decision:
    """The decision when the model step reused the champion's own version (same data version
    and code version): nothing to promote. Settled only while the champion still clears the
    baseline margin on the current validation window, which can change while the train rows do
    not (a new validation file, new days reaching validation): else a person should look."""
    metric = PRIMARY[task][0]
    kept = f"not promoted: version {version} is already the champion"
    if not math.isfinite(challenger):
        return Decision(False, f"{kept}, but its {metric} is not finite ({challenger})",
                        float("nan"), 0.0)  # fmt: skip
    vs_baseline = improvement(task, challenger, baseline)
    if short := _short_of_baseline(metric, gate, vs_baseline, challenger, baseline):
        return Decision(
            False, f"{kept}, but on this validation window it {short}", vs_baseline, 0.0
        )
    return Decision(
        False,
        f"{kept} (same data version and code version: the model step trained nothing new)",
        vs_baseline,
        0.0,
        settled=True,
    )
