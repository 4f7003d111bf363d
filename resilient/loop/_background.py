"""Rank 0's background writer: an asynchronous save returns to training once the state is copied.

The copy (`checkpoint.Stager`) is the only stall training sees; the bytes are written by a thread
with the same atomic protocol, manifest and checksums as a synchronous save, so a checkpoint
exists only once it is committed, whatever happens to the process meanwhile. One write is in
flight at most: the staging buffers are reused, and a rule's bookkeeping (top-k, `last`) must
know whether a save committed before it plans the next. The thread writes and, the moment the
checkpoint is committed, records it (`on_commit`: the `checkpoint` event, so that events.jsonl
never misses a checkpoint that exists); everything else the run does with the outcome (links,
evictions, the error) happens on the main thread when the run settles the write, at a boundary
every rank agrees on.

The thread is not a daemon: an interpreter that exits with a write in flight waits for it rather
than leave it half done (the half-done temporary would be harmless, but the save lost). Nor is it
ever joined: the main thread waits for an Event instead, because a `Thread.join` that a signal
handler interrupts (a Ctrl-C) makes CPython 3.11 mark the still running thread as stopped, and the
interpreter then tears torch down under the writer (an abort).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable

from ..checkpoint import NotStageable, Stager
from ._saving import Committed, Files


class BackgroundWriter:
    """Takes one write at a time; `finished` turns True (a plain attribute, cheap to poll) when it ends.

    `on_commit(committed, seconds)` runs in the writer's thread once a write has committed.
    """

    def __init__(self, on_commit: Callable[[Committed, float], None]) -> None:
        self._on_commit = on_commit
        self._stager = Stager()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._result: Committed = []
        self._error: BaseException | None = None
        self._warned = False
        self.finished = False  # the write in flight has ended, committed or failed
        self.seconds = 0.0  # how long the last write took, from its start to its end

    @property
    def busy(self) -> bool:
        """Whether a write was taken and not yet collected by `wait`."""
        return self._thread is not None

    def take(self, files: Files, write: Callable[[Files], Committed]) -> bool:
        """Copy `files` and write the copy in the background; False when the copy would not be faithful."""
        if self._thread is not None:
            raise RuntimeError("a background write is still in flight; wait() for it first")
        try:
            staged = self._stager.stage(files)
        except NotStageable as why:
            if not self._warned:
                self._warned = True
                warnings.warn(f"the state holds {why}, which an asynchronous save cannot copy faithfully; "
                              "this run saves synchronously", stacklevel=2)
            return False
        self.finished, self._result, self._error = False, [], None
        self._done.clear()

        def run() -> None:
            started = time.monotonic()
            try:
                staged.ready()
                self._result = write(staged.state)
                self.seconds = time.monotonic() - started
                self._on_commit(self._result, self.seconds)
            except BaseException as error:  # handed to the main thread by wait()
                self._error = error
            finally:
                self.finished = True
                self._done.set()

        self._thread = threading.Thread(target=run, name="resilient-checkpoint-writer")
        self._thread.start()
        return True

    def wait(self) -> Committed:
        """The write's committed targets once it ends; raises what it raised.

        Interrupted (a Ctrl-C), the write stays in flight and can be waited for again.
        """
        if self._thread is None:
            raise RuntimeError("no background write to wait for")
        self._done.wait()
        self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
        return self._result
