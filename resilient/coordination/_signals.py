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


# Signals that cannot serve as a warning: they cannot be caught, or they already mean something
# to the process (faults, job control, children, Ctrl-C) and catching them would change that.
_UNUSABLE = {
    signal.SIGKILL: "it cannot be caught",
    signal.SIGSTOP: "it cannot be caught",
    signal.SIGINT: "it is Ctrl-C, which resilient already handles",
    signal.SIGCHLD: "it reports child processes (DataLoader workers rely on it)",
    signal.SIGCONT: "it resumes stopped processes",
    signal.SIGTSTP: "it is job control", signal.SIGTTIN: "it is job control", signal.SIGTTOU: "it is job control",
    signal.SIGSEGV: "it reports a crash", signal.SIGBUS: "it reports a crash", signal.SIGFPE: "it reports a crash",
    signal.SIGILL: "it reports a crash", signal.SIGABRT: "it reports a crash", signal.SIGSYS: "it reports a crash",
    signal.SIGTRAP: "debuggers use it", signal.SIGPIPE: "it reports a closed pipe",
}


def signal_number(value: str | int, *, name: str) -> int:
    """`"USR2"`, `"SIGUSR2"` or `12` -> 12; an unknown or unusable signal is a ValueError naming `name`."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a signal name such as 'USR2' or a number, not {value!r}")
    if isinstance(value, int):
        try:
            member = signal.Signals(value)
        except ValueError:
            raise ValueError(f"{name}={value} is not a signal number on this system") from None
    elif isinstance(value, str):
        upper = value.strip().upper()
        member = getattr(signal.Signals, upper if upper.startswith("SIG") else "SIG" + upper, None)
        if member is None:
            raise ValueError(f"{name}={value!r:.40} is not a signal name (e.g. 'USR1', 'USR2', 'TERM')")
    else:
        raise TypeError(f"{name} must be a signal name such as 'USR2' or a number, not {value!r:.40}")
    if member in _UNUSABLE:
        raise ValueError(f"{name}={member.name} cannot be the warning signal: {_UNUSABLE[member]} (use USR1 or USR2)")
    return int(member)


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

    def uninstall(self) -> None:
        """Give the signals back to whoever had them before."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
