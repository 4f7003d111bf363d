"""The step rank 0 last finished and when, kept where a SIGKILL cannot take it: a mapped file.

A SIGKILL (an OOM kill, a node lost, `scancel --signal=KILL`) ends a start without an event, yet
the goodput report must say how many steps it lost, those since its last checkpoint, and when it
died. An event per step would cost a system call per step; instead rank 0 keeps the step and
the time in `<run_dir>/.heartbeat`, 16 bytes mapped MAP_SHARED: each step is two stores into
memory, no system call, and the kernel's page cache keeps the page when the process dies (a
machine that dies takes it along: then the last event is all there is). Nothing is fsynced: it
is a record, like events.jsonl, and decides nothing.

Each start resets it (step -1: no step yet) after reading what the previous start left there
(`read_heartbeat`), which `requeue.conclude.begin` records as a `lost` event when that start
never recorded its end; `resilient report` reads it for a last start that died unrecorded.
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ._layout import HEARTBEAT_FILE
from ._modes import FILE_MODE, make_dirs

_SIZE = 16  # two float64: the step (exact up to 2**53) and its wall-clock time
_NO_STEP = -1.0
_EXACT = 2.0**53  # the steps a float64 holds exactly
_LATEST = 1e11  # seconds since 1970: the year 5138, past which a time is not one a clock gave


@dataclass(frozen=True)
class Beat:
    """What the heartbeat holds: steps finished (None: none yet in that start) and the time of
    the last one (time.time()), or of the start when there was none."""

    step: int | None
    time: float


def read_heartbeat(run_dir: Path) -> Beat | None:
    """What the last start to reset the heartbeat left in it; None if there is none or it is not ours."""
    try:
        data = (run_dir / HEARTBEAT_FILE).read_bytes()
    except OSError:
        return None
    if len(data) != _SIZE:
        return None
    step, moment = memoryview(data).cast("d")
    if not (step == _NO_STEP or 0 <= step <= _EXACT and step.is_integer()) or not 0 < moment < _LATEST:
        return None
    return Beat(None if step == _NO_STEP else int(step), moment)


class Heartbeat:
    """Rank 0's mapped heartbeat for one start: `beat(step)` after every step, two stores in memory."""

    def __init__(self, run_dir: Path) -> None:
        make_dirs(run_dir)
        descriptor = os.open(run_dir / HEARTBEAT_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            os.ftruncate(descriptor, _SIZE)
            self._map = mmap.mmap(descriptor, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(descriptor)  # the mapping keeps the file
        self._slots = memoryview(self._map).cast("d")
        self._slots[0], self._slots[1] = _NO_STEP, time.time()

    def beat(self, step: int) -> None:
        """`step` steps are finished, now."""
        slots = self._slots
        slots[0] = step
        slots[1] = time.time()

    def close(self) -> None:
        self._slots.release()
        self._map.close()
