"""The background writer: an asynchronous save returns to training once the state is copied.

The copy (`checkpoint.Stager`) is the only stall training sees; the bytes are written by a thread
with the same atomic protocol, manifest and checksums as a synchronous save, so a checkpoint
exists only once it is committed, whatever happens to the process meanwhile. One write is in
flight at most: the staging buffers are reused, and a rule's bookkeeping (top-k, `last`) must
know whether a save committed before it plans the next. The thread writes and, the moment the
checkpoint is committed, does what follows a commit (`on_commit`: the `checkpoint` event, so that
events.jsonl never misses a checkpoint that exists, the `last` link and the evictions, which
training need not wait for either); the outcome reaches the main thread when the run settles
the write, at a boundary every rank agrees on.

Rank 0 writes the replicated state this way. With sharded state (FSDP2) every rank has a writer:
each copies the local shards of its DTensors (`split_dtensors`) into its reused buffers, then its
thread runs DCP's ``save`` of the copy, checksums its files and hands their entries to rank 0,
whose thread commits only once every rank's write succeeded (`loop/_saving.py`). Those threads
talk on a gloo group of their own (`side_group`), never on the groups training and the loop use,
so their collectives cannot pair up with the training thread's.

Why not DCP's own ``async_save``, which copies to CPU and saves in a thread too? Measured on the
same state (`benchmarks/sharded_async.py`: two ranks, gloo, FSDP2 with AdamW, 288 MiB in all;
median of 3 saves, two runs on a shared 2-core machine): a stall of 54 to 221 ms per save with
our copy against 668 to 1257 ms with ``async_save``, and 1.2 to 2.9 s against 1.9 to 5.2 s until
rank 0 holds every rank's entries.
DCP's staging keeps its buffers only if it may pin them (``cache_staged_state_dict``), and pinning
needs an accelerator, so on a CPU machine it allocates and faults in the whole state again at
every save, inside the stall; our Stager reuses plain buffers everywhere (pinned for CUDA) and
makes them before the first save. Ours also keeps one writer, one copy and one way of settling
an outcome for sharded and replicated state alike.

The first save would also pay for making the buffers (page faults; pinning, for CUDA, is slower
still): `reserve` makes them in the background once the state has its full size, before a
rule asks for the first save; a run that stops meanwhile cuts that short (`stop_reserving`).

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
from typing import Any

from ..checkpoint import NotStageable, Staged, Stager
from ._saving import Committed, Files


class BackgroundWriter:
    """Takes one write at a time; `finished` turns True (a plain attribute, cheap to poll) when it ends."""

    def __init__(self) -> None:
        self._stager = Stager()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._cancel = threading.Event()  # set: the reservation in flight stops early
        self._result: Committed = []
        self._error: BaseException | None = None
        self._warned = False
        self._reserving = False  # the job in flight makes buffers, it writes nothing
        self.finished = False  # the write in flight has ended, committed or failed
        self.seconds = 0.0  # how long the last write took, from its start to its end

    def reserve(self, state: Any) -> None:
        """Make the staging buffers `state` will need (its tensors' sizes are what matter), in the
        background; a state that cannot be staged is left to `stage` to report."""
        if self._thread is not None:
            return
        try:
            kinds = self._stager.kinds(state)
        except NotStageable:
            return
        self._start(lambda: self._stager.reserve(kinds, self._cancel.is_set), None)

    def stop_reserving(self) -> None:
        """End a reservation of buffers in flight at its next chunk: the run is stopping and will
        not use them, and neither its emergency checkpoint nor its exit should wait for them."""
        if self._thread is not None and self._reserving:
            self._cancel.set()
            try:
                self.wait()
            except Exception:  # noqa: S110 - buffers that could not be made are not needed now
                pass

    @property
    def busy(self) -> bool:
        """Whether a write was taken and not yet collected by `wait`."""
        return self._thread is not None

    def take(self, files: Files, write: Callable[[Files], Committed],
             on_commit: Callable[[Committed, float], None] = lambda committed, seconds: None) -> bool:
        """Copy `files` and write the copy in the background, then run `on_commit(committed,
        seconds)` in the writer's thread; False when the copy would not be faithful."""
        staged = self.stage(files)
        if staged is None:
            return False
        self.start(staged, write, on_commit)
        return True

    def stage(self, state: Any) -> Staged | None:
        """Copy `state` for a write that `start` begins (the ranks of a sharded save first agree
        that each could copy its part); None, with one warning, when the copy would not be faithful."""
        if self._thread is not None and not self._reserving:
            raise RuntimeError("a background write is still in flight; wait() for it first")
        if self._thread is not None:
            try:
                self.wait()  # the buffers being made are needed now
            except Exception:  # noqa: S110 - staging makes what is missing, and reports its own failure
                pass
        try:
            return self._stager.stage(state)
        except NotStageable as why:
            if not self._warned:
                self._warned = True
                warnings.warn(f"the state holds {why}, which an asynchronous save cannot copy faithfully; "
                              "this run saves synchronously", stacklevel=3)
            return None

    def start(self, staged: Staged, write: Callable[[Any], Committed],
              on_commit: Callable[[Committed, float], None] = lambda committed, seconds: None) -> None:
        """Write the `staged` copy in the background, then run `on_commit` in the writer's thread."""
        self._start(lambda: (staged.ready(), write(staged.state))[1], on_commit)

    def _start(self, work: Callable[[], Committed | None],
               on_commit: Callable[[Committed, float], None] | None) -> None:
        """Run `work` in the thread; a write has its `on_commit`, a reservation of buffers None."""
        self.finished, self._result, self._error, self._reserving = False, [], None, on_commit is None
        self._done.clear()
        self._cancel.clear()

        def run() -> None:
            started = time.monotonic()
            try:
                self._result = work() or []
                if on_commit is not None:
                    self.seconds = time.monotonic() - started
                    on_commit(self._result, self.seconds)
            except BaseException as error:  # handed to the main thread by wait()
                self._error = error
            finally:
                self.finished = True
                self._done.set()

        self._thread = threading.Thread(target=run, name="resilient-checkpoint-writer")
        self._thread.start()

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
