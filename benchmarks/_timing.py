"""Timing shared by the benchmarks (run them as scripts: `python benchmarks/NAME.py`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    """Best of several runs: the least disturbed by other processes on a shared node."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def alternating_best(works: Sequence[Callable[[], object]], rounds: int, *, clock: Callable[[], float] = time.perf_counter,
                     before: Callable[[], None] | None = None) -> list[float]:
    """Best seconds of each work, taking turns round after round, so that a busy moment of a
    shared machine slows every work of its round alike and a ratio between them stays fair.
    `before` runs ahead of each work, untimed (evicting a cache, say)."""
    best = [float("inf")] * len(works)
    for _ in range(rounds):
        for index, work in enumerate(works):
            if before is not None:
                before()
            start = clock()
            work()
            best[index] = min(best[index], clock() - start)
    return best
