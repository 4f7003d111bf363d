"""How monitored scores rank, NaN included.

Lightning replaces a NaN score by +inf/-inf before storing it, so a diverged run can become
``best_model_path`` when every score is NaN, and the stored value hides that it was NaN. Here a
NaN is stored as NaN, ranks as the worst possible value (first to be evicted, never displacing
a real score) and is never reported as the best. Ties are otherwise broken exactly like
Lightning's ``max``/``min`` over the ``best_k_models`` dict: the first entry in insertion order.
"""

from __future__ import annotations

import math
from typing import Literal

Mode = Literal["min", "max"]


def worst_score(mode: Mode) -> float:
    """The score nothing can be worse than; also the initial ``kth_value``, as in Lightning."""
    return math.inf if mode == "min" else -math.inf


def rank(score: float, mode: Mode) -> float:
    """``score`` with NaN mapped to the worst value for ``mode``, so comparisons are total."""
    return worst_score(mode) if math.isnan(score) else score


def improves(score: float, than: float, mode: Mode) -> bool:
    """Strictly better: a tie with the kth checkpoint does not replace it (as in Lightning)."""
    ours, theirs = rank(score, mode), rank(than, mode)
    return ours < theirs if mode == "min" else ours > theirs


def worst(scores: dict[str, float], mode: Mode) -> str:
    """Path of the checkpoint to evict next (Lightning's ``kth_best_model_path``)."""
    pick = max if mode == "min" else min
    return pick(scores, key=lambda path: rank(scores[path], mode))


def best(scores: dict[str, float], mode: Mode) -> str:
    """Path of the best non-NaN checkpoint, or ``""`` when there is none."""
    real = {path: score for path, score in scores.items() if not math.isnan(score)}
    if not real:
        return ""
    pick = min if mode == "min" else max
    return pick(real, key=real.__getitem__)
