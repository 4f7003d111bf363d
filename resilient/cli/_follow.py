"""Streaming a job's log and events until it ends (`submit --follow`, `logs -f`).

With the events shown, the job's own closing line (`resilient: requeued: ...`, printed on its
stderr just after it recorded the event) is left out: the event says the same, and the log,
read before the events in each poll, would show it before the checkpoint that led to it.
"""

from __future__ import annotations

import codecs
import re
import sys
import time
from pathlib import Path

from ..rundir import State, read_events
from ..submission import JobHandle
from ._common import describe, when

_POLL_S = 0.5
# What requeue/conclude.announce() prints as a job's start ends.
_ANNOUNCEMENT = re.compile(rf"resilient: (?:{'|'.join(state.value for state in State)}): ")


class _Tail:
    """The new text of a file since the last read (the file may not exist yet).

    With `leave_out`, only whole lines come out (up to a newline or carriage return), without
    those the pattern matches; `final` gives the unfinished last line too.
    """

    def __init__(self, path: Path, leave_out: re.Pattern[str] | None = None) -> None:
        self._path = path
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two reads
        self._leave_out = leave_out
        self._unfinished = ""

    def read(self, *, final: bool = False) -> str:
        try:
            with open(self._path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            data = b""
        self._offset += len(data)
        text = self._decoder.decode(data, final=final)
        if self._leave_out is None:
            return text
        text = self._unfinished + text
        end = len(text) if final else max(text.rfind("\n"), text.rfind("\r")) + 1
        text, self._unfinished = text[:end], text[end:]
        return "".join(line for line in text.splitlines(keepends=True) if not self._leave_out.match(line))


def follow(handle: JobHandle, rank: int = 0, *, events: bool = True) -> str:
    """Print the rank's stdout and stderr (and the run's events) as they grow; returns the final state."""
    logs = [_Tail(handle.log_path(rank, "stdout")),
            _Tail(handle.log_path(rank, "stderr"), leave_out=_ANNOUNCEMENT if events else None)]
    seen = len(read_events(handle.run_dir)) if events else 0
    while True:
        ended = handle.done()  # read before the last drain, so nothing written before the end is missed
        for tail, stream in zip(logs, (sys.stdout, sys.stderr)):
            text = tail.read(final=ended)
            if text:
                stream.write(text)
                stream.flush()
        if events:
            new = read_events(handle.run_dir)[seen:]
            seen += len(new)
            for event in new:
                print(f"[resilient {when(event.get('time'))}] {describe(event, handle.run_dir)}", file=sys.stderr,
                      flush=True)
        if ended:
            return handle.state
        time.sleep(_POLL_S)
