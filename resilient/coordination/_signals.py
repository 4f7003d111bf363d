"""Recording the cluster's stop signals without doing anything inside the handler.

A signal can arrive in the middle of an optimizer step, a collective or a `torch.save`; saving
from the handler would checkpoint half a step or deadlock a collective. So the handler only
notes which signal came and when, and the training loop acts at its next step boundary.

submitit installs its own handlers for these signals in SLURM jobs (and requeues from inside
them). While a Run is active its recorder replaces them, and puts them back when the Run
closes: the requeue must happen after the rank-coordinated checkpoint, not before it.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any


def signal_number(value: str | int, *, name: str) -> int:
    """`"USR2"`, `"SIGUSR2"` or `12` -> 12; anything else is a ValueError naming `name`."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a signal name such as 'USR2' or a number, not {value!r}")
    if isinstance(value, int):
        try:
            return int(signal.Signals(value))
        except ValueError:
            raise ValueError(f"{name}={value} is not a signal number on this system") from None
    if isinstance(value, str):
        upper = value.strip().upper()
        member = getattr(signal.Signals, upper if upper.startswith("SIG") else "SIG" + upper, None)
        if member is None:
            raise ValueError(f"{name}={value!r} is not a signal name (e.g. 'USR1', 'USR2', 'TERM')")
        return int(member)
    raise TypeError(f"{name} must be a signal name such as 'USR2' or a number, not {value!r}")


class SignalRecorder:
    """Notes the first arrival time of each watched signal; the loop reads `received`."""

    def __init__(self, signals: Iterable[int]) -> None:
        self._signals = tuple(dict.fromkeys(signals))
        self._received: dict[int, float] = {}
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received.setdefault(signum, time.time())

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

    def install(self) -> None:
        """Take over the watched signals (main thread only: Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread():
            warnings.warn(
                "resilient.Run was created outside the main thread, so it cannot catch preemption "
                "signals; create it in the main thread to get emergency checkpoints",
                stacklevel=3,
            )
            return
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Give the signals back to whoever had them before."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def ignore_in_workers(loader: object, signals: tuple[int, ...]) -> None:
    """Make a DataLoader's worker processes ignore the stop signals.

    SLURM signals every process of the job; a worker killed by SIGTERM takes the DataLoader
    (and the training step) down with it before the emergency checkpoint can be written.
    Workers end anyway when the main process does.
    """
    if not getattr(loader, "num_workers", 0) or getattr(loader, "_resilient_signals_ignored", False):
        return
    _kill_workers_at_exit()
    user_init: Callable[[int], None] | None = getattr(loader, "worker_init_fn", None)
    loader.worker_init_fn = _IgnoreSignals(signals, user_init)  # type: ignore[attr-defined]
    object.__setattr__(loader, "_resilient_signals_ignored", True)


class _IgnoreSignals:
    """Picklable worker_init_fn (spawned workers need to unpickle it) that ignores signals first."""

    def __init__(self, signals: tuple[int, ...], then: Callable[[int], None] | None) -> None:
        self._signals = signals
        self._then = then

    def __call__(self, worker_id: int) -> None:
        for signum in self._signals:
            signal.signal(signum, signal.SIG_IGN)
        if self._then is not None:
            self._then(worker_id)


def _kill_daemonic_children() -> None:
    """SIGKILL daemonic children, so that interpreter exit cannot hang on a DataLoader worker.

    At exit, multiprocessing terminates its daemonic children with SIGTERM and then joins them.
    A worker that ignores SIGTERM (our doing) and was never shut down (its iterator still
    referenced, e.g. by the traceback of the exception that ends the script) would make that
    join wait forever: a crashed job would hang instead of failing or requeueing. SIGKILL is what
    multiprocessing means to do anyway; a worker still starting up may not ignore SIGTERM yet,
    so checking which ones ignore it would race.
    """
    children = [child for child in multiprocessing.active_children() if child.daemon and child.pid is not None]
    if children and threading.current_thread() is threading.main_thread():
        # DataLoader's SIGCHLD handler would report each kill as a worker failure.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]


_exit_guard_registered = False


def _kill_workers_at_exit() -> None:
    # atexit runs handlers last-registered first: registered after multiprocessing's own (its
    # module is imported above), ours runs before its terminate-and-join.
    global _exit_guard_registered
    if not _exit_guard_registered:
        _exit_guard_registered = True
        atexit.register(_kill_daemonic_children)
