"""The run's status file: what state it is in and how often it has been requeued, and why.

Counts must survive restarts (a requeued job is a new process) and be shared by every rank
that might decide a requeue, so they live in `<run_dir>/status.json`, updated under a file lock
(an flock, `_lock.flocked`) and replaced atomically and durably. A new submission (a different
job id) starts counting afresh; a requeued or restarted job keeps its id (SLURM and submitit's
local executor both do) and so keeps its counts. Whoever reads it (the job, `resilient status`)
gets a DamagedFile naming what is wrong if it is not what resilient wrote, never a half-read record.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._files import DamagedFile, read_json_object, type_problem
from ._layout import STATUS_FILE, STATUS_LOCK_FILE
from ._lock import flocked
from ._modes import make_dirs
from ._vocabulary import Vocabulary
from ._write import write_json


class State(Vocabulary):
    """Final and intermediate states a run can be in, as users read them (and status.json holds them)."""

    RUNNING = "running"
    REQUEUED = "requeued"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"  # a plain process stopped by a signal after its checkpoint; starting it again resumes


@dataclass
class Status:
    """What status.json holds: the run's state, its requeue counts by cause, the world size of each
    start, and why it is where it is."""

    job_id: str | None = None
    state: State = State.RUNNING
    requeues: dict[str, int] = field(default_factory=dict)  # cause -> times requeued for it
    message: str = ""
    updated: float = 0.0
    cancel_requested: bool = False  # set by `resilient cancel` before it signals a local job
    world_sizes: list[int] = field(default_factory=list)  # ranks at each start of this job, oldest first

    def __post_init__(self) -> None:
        self.state = State(self.state)  # as read from the file: the plain string

    def count(self, *causes: str) -> int:
        return sum(self.requeues.get(cause, 0) for cause in causes)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "job_id": (str, type(None)), "state": (str,), "requeues": (dict,), "message": (str,), "updated": (int, float),
    "cancel_requested": (bool,), "world_sizes": (list,),
}
_RESET = "delete it to reset the run's requeue counts"


def _problem(raw: dict[str, Any]) -> str | None:
    problem = type_problem(raw, _FIELD_TYPES)
    if problem is None and raw.get("state", State.RUNNING) not in {state.value for state in State}:
        problem = f"state {raw['state']!r:.40} is none of {', '.join(state.value for state in State)}"
    requeues = raw.get("requeues", {})
    if problem is None and not all(isinstance(cause, str) and type(count) is int for cause, count in requeues.items()):
        problem = f"requeues {requeues!r:.40} are not counts by cause"
    world_sizes = raw.get("world_sizes", [])
    if problem is None and not all(type(size) is int and size >= 1 for size in world_sizes):
        problem = f"world_sizes {world_sizes!r:.40} are not rank counts"
    return problem


def _read(path: Path) -> Status:
    try:
        raw = read_json_object(path)
    except DamagedFile as damage:
        raise DamagedFile(path, f"{damage.why}; {_RESET}") from None
    if raw is None:
        return Status()
    problem = _problem(raw)
    if problem is not None:
        raise DamagedFile(path, f"{problem}; {_RESET}")
    return Status(**{key: raw[key] for key in Status.__dataclass_fields__ if key in raw})


def read_status(run_dir: Path) -> Status:
    """The current status (an empty one before the first start)."""
    return _read(run_dir / STATUS_FILE)


@contextmanager
def update_status(run_dir: Path) -> Iterator[Status]:
    """Read, let the caller change, and atomically write back the status, under a file lock."""
    make_dirs(run_dir)
    path = run_dir / STATUS_FILE
    with flocked(run_dir / STATUS_LOCK_FILE):
        status = _read(path)
        yield status
        status.updated = time.time()
        write_json(path, asdict(status), sort_keys=True)
