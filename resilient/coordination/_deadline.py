"""Stopping in time when the cluster gives no warning before the time limit.

Not every cluster sends a warning signal (`--signal` is opt-in, and some sites drop it). A job
that knows its own end time and how long its saves and steps take can stop on its own: as soon
as finishing one more step plus a save (with a safety factor) would no longer fit before the
end, it asks for an emergency checkpoint, exactly as if the warning signal had come.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Before the first save has been timed, assume it takes this long; the measured duration of
# each full save replaces it. Too large a guess would stop a short job before it starts.
FIRST_SAVE_GUESS_S = 5.0
SAVE_SAFETY_FACTOR = 1.5


class Deadline:
    """`near()` is True once one more step and a save might not finish before `end_time`."""

    def __init__(self, end_time: float | None, *, margin_s: float, clock: Callable[[], float] = time.time) -> None:
        self._end_time = end_time
        self._margin_s = margin_s
        self._clock = clock

    @property
    def active(self) -> bool:
        """Whether there is an end time to watch: without one, the loop need not time its steps."""
        return self._end_time is not None

    def near(self, step_seconds: float, save_seconds: float | None) -> bool:
        if self._end_time is None:
            return False
        save = FIRST_SAVE_GUESS_S if save_seconds is None else save_seconds
        needed = step_seconds + SAVE_SAFETY_FACTOR * save + self._margin_s
        return self._clock() + needed >= self._end_time
