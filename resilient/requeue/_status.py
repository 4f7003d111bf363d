"""The run's status file: what state it is in and how often it has been requeued, and why.

Counts must survive restarts (a requeued job is a new process) and be shared by every rank
that might decide a requeue, so they live in `<run_dir>/status.json`, updated under a file lock
and replaced atomically. A new submission (a different job id) starts counting afresh; a
requeued or restarted job keeps its id (SLURM and submitit's local executor both do) and so
keeps its counts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock

STATUS_FILE = "status.json"

# Final and intermediate states a run can be in, as users will read them.
RUNNING = "running"
REQUEUED = "requeued"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
GAVE_UP = "gave_up"
STOPPED = "stopped"  # a plain process stopped by a signal after its checkpoint; starting it again resumes


@dataclass
class Status:
    job_id: str | None = None
    state: str = RUNNING
    requeues: dict[str, int] = field(default_factory=dict)  # cause -> times requeued for it
    message: str = ""
    updated: float = 0.0
    cancel_requested: bool = False  # set by `resilient cancel` before it signals a local job

    def count(self, *causes: str) -> int:
        return sum(self.requeues.get(cause, 0) for cause in causes)


def _read(path: Path) -> Status:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Status()
    except (OSError, ValueError) as error:
        raise RuntimeError(f"{path} is unreadable ({error}); delete it to reset the run's requeue counts") from None
    return Status(**{key: raw[key] for key in Status.__dataclass_fields__ if key in raw})


def read_status(run_dir: Path) -> Status:
    """The current status (an empty one before the first start)."""
    return _read(run_dir / STATUS_FILE)


@contextmanager
def update_status(run_dir: Path) -> Iterator[Status]:
    """Read, let the caller change, and atomically write back the status, under a file lock."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / STATUS_FILE
    with FileLock(str(run_dir / f".{STATUS_FILE}.lock")):
        status = _read(path)
        yield status
        status.updated = time.time()
        temporary = path.with_name(f".{STATUS_FILE}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(asdict(status), indent=1, sort_keys=True) + "\n")
        os.replace(temporary, path)
