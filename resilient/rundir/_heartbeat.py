"""The step rank 0 last finished, kept where a SIGKILL cannot take it: a mapped file.

A SIGKILL (an OOM kill, a node lost, `scancel --signal=KILL`) ends a start without an event, yet
the goodput report must say how many steps it lost: those since its last checkpoint. An event per
step would cost a system call per step; instead rank 0 keeps the step in `<run_dir>/.heartbeat`,
8 bytes mapped MAP_SHARED: each step is one store into memory, no system call, and the kernel's
page cache keeps the page when the process dies (a machine that dies takes it along: then the
last event is all there is). Nothing is fsynced: it is a record, like events.jsonl, and decides
nothing. Not the step's time: a clock read costs about as much again as the rest of the store,
which the step path's budget (`benchmarks/step_overhead.py`) has no room for; the report
estimates when a killed start died from its pace instead (`_goodput.py`).

Each start resets it (-1: no step yet) after reading what the previous start left there
(`read_heartbeat`), which `requeue.conclude.begin` records as a `lost` event when that start
never recorded its end; `resilient report` reads it for a last start that died unrecorded.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from ._layout import HEARTBEAT_FILE
from ._modes import FILE_MODE, make_dirs

_SIZE = 8  # one int64: the steps finished
_NO_STEP = -1


@dataclass(frozen=True)
class Beat:
    """What the heartbeat holds: the steps finished in the start that last reset it (None: none yet)."""

    step: int | None


def read_heartbeat(run_dir: Path) -> Beat | None:
    """What the last start to reset the heartbeat left in it; None if there is none or it is not ours."""
    try:
        data = (run_dir / HEARTBEAT_FILE).read_bytes()
    except OSError:
        return None
    if len(data) != _SIZE:
        return None
    [step] = memoryview(data).cast("q")
    if step < _NO_STEP:
        return None
    return Beat(None if step == _NO_STEP else step)


class Heartbeat:
    """Rank 0's mapped heartbeat for one start: `beat(step)` after every step, one store in memory."""

    def __init__(self, run_dir: Path) -> None:
        make_dirs(run_dir)
        descriptor = os.open(run_dir / HEARTBEAT_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            os.ftruncate(descriptor, _SIZE)
            self._map = mmap.mmap(descriptor, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(descriptor)  # the mapping keeps the file
        self._slots = memoryview(self._map).cast("q")
        self._slots[0] = _NO_STEP

    def beat(self, step: int) -> None:
        """`step` steps are finished."""
        self._slots[0] = step

    def close(self) -> None:
        self._slots.release()
        self._map.close()
