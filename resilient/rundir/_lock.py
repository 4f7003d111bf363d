"""The run directory's flocks: one live job per run directory, one status.json writer at a time.

`<run_dir>/.lock` is held by rank 0 while it runs: two jobs writing checkpoints and status into
one directory would corrupt each other's bookkeeping silently. The kernel drops an flock when
its process dies, however it dies, so a lock left behind by a killed job never blocks the next
one: stale locks recover by themselves, and the file's content (pid, host, job id) only serves
to name the holder in the error. `flocked` holds another file's lock for a moment, waiting as
long as that takes: status.json's read-change-write (`_status.py`).

An flock belongs to the open file, not the process, and a forked child (a DataLoader worker)
shares it: the lock would outlive a killed job for as long as any of its workers did. Every
forked child therefore closes its copy at once (`os.register_at_fork`), of either lock; the
parent's lock is unaffected, since the kernel only drops it when the last descriptor closes.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._layout import LOCK_FILE
from ._modes import FILE_MODE, make_dirs

_PATIENCE_S = 5.0  # a job starting while `resilient submit` holds the lock to submit waits that out


class RunDirError(RuntimeError):
    """The run directory cannot take this job (as it is now)."""


class RunDirInUse(RunDirError):
    """Another live job (or process) is working in this run directory."""


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    job = f", job {holder['job_id']}" if holder.get("job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}"


def _read_holder(descriptor: int) -> dict[str, Any] | None:
    try:
        text = os.pread(descriptor, 4096, 0).decode()
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


_held: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    for descriptor in _held:
        os.close(descriptor)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLock:
    """Held from the start of a Run to its end, by rank 0 only."""

    def __init__(self, run_dir: Path) -> None:
        self._path = run_dir / LOCK_FILE
        self._descriptor: int | None = None
        self._owner: int | None = None  # the pid that took it: a forked copy of this object holds nothing

    def acquire(self, job_id: str | None, *, wait: bool = True) -> None:
        """Take the lock or raise RunDirInUse naming its holder; `wait=False` gives up at once."""
        make_dirs(self._path.parent)
        descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        deadline = time.monotonic() + (_PATIENCE_S if wait else 0.0)
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(descriptor)
                    os.close(descriptor)
                    raise RunDirInUse(
                        f"run_dir {self._path.parent} is in use by {_describe(holder)}; "
                        "two jobs must not share a run directory"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(descriptor, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "job_id": job_id, "since": time.time()}
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        self._descriptor, self._owner = descriptor, os.getpid()
        _held.add(descriptor)

    def release(self) -> None:
        if self._descriptor is not None and self._owner == os.getpid():
            _held.discard(self._descriptor)
            os.close(self._descriptor)  # closing drops the flock
        self._descriptor = None


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run directory's lock right now (None: nobody), without waiting."""
    try:
        descriptor = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(_read_holder(descriptor))
    finally:
        os.close(descriptor)
    return None


@contextmanager
def flocked(path: Path) -> Iterator[None]:
    """Hold the exclusive flock of `path` (made if missing) for the block, however it ends; waits for it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    owner = os.getpid()
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        _held.add(descriptor)
        yield
    finally:
        if os.getpid() == owner:  # a forked child closed its copy as it started
            _held.discard(descriptor)
            os.close(descriptor)  # closing drops the flock
