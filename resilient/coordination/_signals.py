"""Recording the cluster's stop signals without doing anything inside the handler.

A signal can arrive in the middle of an optimizer step, a collective or a `torch.save`; saving
from the handler would checkpoint half a step or deadlock a collective. So the handler only
notes which signal came and when, and the training loop acts at its next step boundary.

submitit installs its own handlers for these signals in SLURM jobs (and requeues from inside
them). While a Run is active its recorder replaces them, and puts them back when the Run
closes: the requeue must happen after the rank-coordinated checkpoint, not before it.

Ctrl-C (SIGINT) is a stop like the others: the first one checkpoints at the next step boundary.
A second one means "now": it raises KeyboardInterrupt at once, whatever is running, and the
atomic commit guarantees that an interrupted save leaves nothing that looks like a checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
import warnings
from collections.abc import Iterable
from types import FrameType
from typing import Any


class SignalRecorder:
    """Notes the first arrival time of each watched signal; the loop reads `received`."""

    def __init__(self, signals: Iterable[int]) -> None:
        self._signals = tuple(dict.fromkeys(signals))
        self._received: dict[int, float] = {}
        self._previous: dict[int, Any] = {}
        self._forced = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and signum in self._received:
            self._forced = True
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, not at the next step boundary
        self._received.setdefault(signum, time.time())

    @property
    def forced(self) -> bool:
        """Whether a second Ctrl-C asked to stop at once."""
        return self._forced

    @property
    def signals(self) -> tuple[int, ...]:
        return self._signals

    @property
    def active(self) -> bool:
        """Whether the handlers are installed (not when the Run lives outside the main thread)."""
        return bool(self._previous)

    @property
    def received(self) -> dict[int, float]:
        """Signal number -> time.time() of its first arrival."""
        return self._received

    def install(self, *, stacklevel: int) -> None:
        """Take over the watched signals (main thread only: Python delivers signals there).

        `stacklevel` points the warning given outside the main thread at the code that created the run.
        """
        if threading.current_thread() is not threading.main_thread():
            warnings.warn(
                "resilient.Run was created outside the main thread, so it cannot catch preemption "
                "signals; create it in the main thread to get emergency checkpoints",
                stacklevel=stacklevel,
            )
            return
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def reclaim(self) -> None:
        """Handle the watched signals again after other code replaced the handlers `install` set.

        A framework that installs its own handlers once training starts (Lightning's Trainer does,
        and would act inside them) must not be the one to answer: the stop belongs at a step
        boundary. What `install` saved stays what `uninstall` gives back; not installed, a no-op.
        """
        for signum in self._previous:
            signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Give the signals back to whoever had them before."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
