"""Streaming a job's log and events until it ends (`submit --follow`, `logs -f`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..rundir._events import read_events
from ..submission import JobHandle
from ._common import describe, when

_POLL_S = 0.5


class _Tail:
    """The new bytes of a file since the last read (the file may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0

    def read(self) -> str:
        try:
            with open(self._path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return ""
        self._offset += len(data)
        return data.decode(errors="replace")


def follow(handle: JobHandle, rank: int = 0, *, events: bool = True) -> str:
    """Print the rank's stdout and stderr (and the run's events) as they grow; returns the final state."""
    logs = [_Tail(handle.log_path(rank, "stdout")), _Tail(handle.log_path(rank, "stderr"))]
    seen = len(read_events(handle.run_dir)) if events else 0
    while True:
        ended = handle.done()  # read before the last drain, so nothing written before the end is missed
        for tail, stream in zip(logs, (sys.stdout, sys.stderr)):
            text = tail.read()
            if text:
                stream.write(text)
                stream.flush()
        if events:
            new = read_events(handle.run_dir)[seen:]
            seen += len(new)
            for event in new:
                print(f"[resilient {when(event.get('time'))}] {describe(event)}", file=sys.stderr, flush=True)
        if ended:
            return handle.state
        time.sleep(_POLL_S)
