"""`events.jsonl`: the run's history, one JSON object per line, for people and for `resilient status`.

Each event is one `write()` of one line to a file opened with O_APPEND, so lines from the job and
from the CLI never interleave, and a crash mid-write can only leave a torn line, which readers
skip and the next event does not extend. Events are a record, not a control channel: nothing decides anything from them,
so they are not fsynced (a checkpoint's own commit is what makes it durable).

Events are written as ASCII JSON, so a torn line is an unfinished ASCII object. A line that is
not valid UTF-8, or a whole JSON line whose fields are not what was written (a time that is not
a time, a step that is not a number), is damage: readers skip it and say where it is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ._files import DamagedFile, type_problem
from ._layout import EVENTS_FILE
from ._modes import FILE_MODE, make_dirs
from ._vocabulary import Vocabulary


class Event(Vocabulary):
    """Event names, as users read them in events.jsonl and `resilient status`."""

    SUBMITTED = "submitted"
    STARTED = "started"
    RESUMED = "resumed"
    CHECKPOINT = "checkpoint"
    CHECKPOINT_FAILED = "checkpoint_failed"  # a periodic save failed and training went on
    SIGNAL = "signal"
    FIRE_DRILL = "fire_drill"
    REQUEUED = "requeued"
    FINISHED = "finished"
    FAILED = "failed"
    GAVE_UP = "gave_up"
    CANCELLED = "cancelled"
    STOPPED = "stopped"
    CANCEL_REQUESTED = "cancel_requested"
    NOTIFY_FAILED = "notify_failed"  # a notification of an end (job.yaml `notify`) failed or was skipped
    FIRST_STEP = "first_step"  # a start's first step is done: what came before it was restoring
    LOST = "lost"  # the previous start ended without recording how (a SIGKILL): the step its heartbeat held


def event_time(moment: float | None = None) -> str:
    """A time (`time.time()`, default now) as events.jsonl writes it: ISO 8601, local, milliseconds."""
    stamp = datetime.now() if moment is None else datetime.fromtimestamp(moment)
    return stamp.astimezone().isoformat(timespec="milliseconds")


def append_event(run_dir: Path, event: Event, **fields: Any) -> None:
    """Append one event with the local time; `fields` must be JSON-serialisable (str() otherwise)."""
    record = {"time": event_time(), "event": event, **fields}
    line = (json.dumps(record, default=str) + "\n").encode()
    make_dirs(run_dir)
    descriptor = os.open(run_dir / EVENTS_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        end = os.fstat(descriptor).st_size
        if end and os.pread(descriptor, 1, end - 1) != b"\n":
            line = b"\n" + line  # after a torn line, start a new one rather than extend it
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


# The fields that readers format, and the types they were written with.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "event": (str,), "time": (str,), "job_id": (str, type(None)), "executor": (str,), "step": (int,),
    "epoch": (int,), "restarts": (int,), "path": (str,), "checkpoint": (str,), "bytes": (int,),
    "seconds": (int, float, type(None)), "reasons": (list,), "cause": (str,), "requeues": (dict,), "message": (str,),
    "error": (str,), "world_size": (int,), "stall_seconds": (int, float), "stalled_at": (str,),
}
# The fields that are times, as `event_time` writes them.
_TIME_FIELDS = ("time", "stalled_at")


@dataclass(frozen=True)
class History:
    """The readable events, oldest first, and the first damaged line if there is one."""

    events: list[dict[str, Any]]
    damage: DamagedFile | None = None


def _problem(event: object) -> str | None:
    if not isinstance(event, dict) or "event" not in event or "time" not in event:
        return "not an event (no 'event' and 'time')"
    problem = type_problem(event, _FIELD_TYPES)
    for name in _TIME_FIELDS:
        if problem is None and name in event:
            try:
                datetime.fromisoformat(event[name])
            except ValueError:
                problem = f"{name} {event[name]!r:.40} is not an ISO 8601 time"
    if problem is None and not all(isinstance(reason, str) for reason in event.get("reasons", [])):
        problem = f"reasons {event['reasons']!r:.40} are not names"
    if problem is None and not all(isinstance(cause, str) and type(count) is int
                                   for cause, count in event.get("requeues", {}).items()):
        problem = f"requeues {event['requeues']!r:.40} are not counts by cause"
    return problem


def read_history(run_dir: Path) -> History:
    """Every complete, readable event, oldest first; damaged lines are skipped and the first is named."""
    path = run_dir / EVENTS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return History([])
    except OSError as error:
        return History([], DamagedFile(path, f"cannot be read ({error.strerror})"))
    events, damage = [], None
    lines = data.split(b"\n")[:-1]  # the last piece is unfinished: no line ends there yet
    for number, line in enumerate(lines, start=1):
        try:
            event = json.loads(line.decode())
        except UnicodeDecodeError as error:
            problem: str | None = f"byte {line[error.start]:#x} is not UTF-8"
        except ValueError:
            continue  # a line torn by a crash mid-write
        else:
            problem = _problem(event)
        if problem is None:
            events.append(event)
        elif damage is None:
            damage = DamagedFile(path, f"line {number}: {problem}")
    return History(events, damage)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete, readable event, oldest first ([] before the first one)."""
    return read_history(run_dir).events
