"""Timing and the row format shared by the benchmarks (run them as scripts: `python benchmarks/NAME.py`,
or all of them at once: `python benchmarks/all.py`)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]  # what `row` returns: JSON as it is


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


def row(what: str, size_mib: float | None, resilient: float | None, anchor: str, anchor_value: float, unit: str, *,
        ratio_of: str, at_least: float | None = None, at_most: float | None = None, target: str | None = None,
        met: bool | None = None, note: str | None = None) -> Row:
    """One result as every benchmark returns it and `all.py` tabulates: resilient's value and its
    anchor's, measured side by side in the same run, their ratio (`ratio_of` says which way:
    "anchor/resilient" or "resilient/anchor"), and the issue's target where it sets one: a bound
    on the ratio (`at_least`, `at_most`), or another one described by `target` and judged by `met`.
    `resilient` None: not measured, `note` says why (then there is no ratio, nor a verdict)."""
    if resilient is None:
        ratio = None
    else:
        ratio = anchor_value / resilient if ratio_of == "anchor/resilient" else resilient / anchor_value
    if at_least is not None:
        target, met = f"ratio >= {at_least:g}x", None if ratio is None else ratio >= at_least
    elif at_most is not None:
        target, met = f"ratio <= {at_most:g}x", None if ratio is None else ratio <= at_most
    return {"what": what, "size_mib": size_mib, "resilient": resilient, "anchor": anchor, "anchor_value": anchor_value,
            "unit": unit, "ratio": ratio, "ratio_of": ratio_of, "target": target, "met": met, "note": note}


def evict(paths: Sequence[Path]) -> None:
    """Drop these files' (or these directories' files') clean pages from the page cache, so the
    next read comes from the disk: ``posix_fadvise(DONTNEED)`` needs no root and leaves the rest
    of the machine alone."""
    for path in paths:
        for file in [path] if path.is_file() else sorted(path.iterdir()):
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def removing(*paths: os.PathLike[str] | str) -> Callable[[], None]:
    """A `before` for `alternating_best` that deletes what the works wrote last round, untimed:
    each save is timed writing a new file, not replacing (and freeing) the last one."""
    def remove() -> None:
        for path in paths:
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
    return remove
