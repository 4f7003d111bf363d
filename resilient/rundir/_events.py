"""`events.jsonl`: the run's history, one JSON object per line, for people and for `resilient status`.

Each event is one `write()` of one line to a file opened with O_APPEND, so lines from the job and
from the CLI never interleave, and a crash mid-write can only leave a torn line, which readers
skip and the next event does not extend. Events are a record, not a control channel: nothing decides anything from them,
so they are not fsynced (a checkpoint's own commit is what makes it durable).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"

# Event names, as users read them in events.jsonl and `resilient status`.
SUBMITTED = "submitted"
STARTED = "started"
RESUMED = "resumed"
CHECKPOINT = "checkpoint"
SIGNAL = "signal"
FIRE_DRILL = "fire_drill"
REQUEUED = "requeued"
FINISHED = "finished"
FAILED = "failed"
GAVE_UP = "gave_up"
CANCELLED = "cancelled"
STOPPED = "stopped"
CANCEL_REQUESTED = "cancel_requested"


def append_event(run_dir: Path, event: str, **fields: Any) -> None:
    """Append one event with the local time; `fields` must be JSON-serialisable (str() otherwise)."""
    record = {"time": datetime.now().astimezone().isoformat(timespec="milliseconds"), "event": event, **fields}
    line = (json.dumps(record, default=str) + "\n").encode()
    run_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run_dir / EVENTS_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        end = os.fstat(descriptor).st_size
        if end and os.pread(descriptor, 1, end - 1) != b"\n":
            line = b"\n" + line  # after a torn line, start a new one rather than extend it
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete event, oldest first ([] before the first one)."""
    try:
        text = (run_dir / EVENTS_FILE).read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-write
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events
