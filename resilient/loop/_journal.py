"""events.jsonl as the training loop writes it: rank 0 alone, every event stamped with the job.

The loop's collaborators (boundary, saver, resume) each record what they did; going through one
journal keeps "only rank 0 writes" and the job id in one place instead of at every call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..rundir import Event, append_event


class Journal:
    """Appends the loop's events for one run directory and job (a no-op off rank 0)."""

    def __init__(self, run_dir: Path, job_id: str | None, *, writes: bool) -> None:
        self._run_dir = run_dir
        self._job_id = job_id
        self._writes = writes

    def record(self, event: Event, **fields: Any) -> None:
        if self._writes:
            append_event(self._run_dir, event, job_id=self._job_id, **fields)
