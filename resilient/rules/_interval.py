"""The clock behind ``train_time_interval``: time since the last time-based save.

It is a class of its own because the elapsed time must survive preemption: a checkpoint records
the seconds elapsed (meaningful on any machine and clock), and a resumed run re-anchors them on
its own monotonic clock, so a job preempted more often than the interval still saves.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta


class IntervalTimer:
    """Says when ``interval`` has elapsed on an injected monotonic clock since the last restart."""

    def __init__(self, interval: timedelta | None) -> None:
        self.interval = interval
        self._seconds = None if interval is None else interval.total_seconds()  # `due` is asked at every step
        self._clock: Callable[[], float] | None = None
        self._anchor = 0.0
        self._pending = 0.0  # seconds elapsed, kept until a clock measures them

    @property
    def bound(self) -> bool:
        return self._clock is not None

    def bind(self, clock: Callable[[], float]) -> None:
        """Measure on `clock` from now on, keeping the seconds already elapsed."""
        self._clock = clock
        self._anchor = clock() - self._pending

    def due(self) -> bool:
        """Whether the interval has elapsed; asking does not restart it."""
        if self._seconds is None or self._clock is None:
            return False
        return self._clock() - self._anchor >= self._seconds

    def restart(self) -> None:
        """A time-based save happened: count from now."""
        if self._clock is None:
            raise RuntimeError("IntervalTimer.restart called before bind")
        self._anchor = self._clock()

    def elapsed(self) -> float:
        """Seconds since the last restart, as a checkpoint records them."""
        if self._clock is None:
            return self._pending
        return self._clock() - self._anchor

    def resume(self, elapsed: float) -> None:
        """Carry on from `elapsed` seconds recorded by an earlier run."""
        self._pending = elapsed
        if self._clock is not None:
            self._anchor = self._clock() - elapsed
