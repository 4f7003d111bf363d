"""Whether a recorded job may still run, asked of its scheduler.

A job killed outright never gets to say it ended, so its status file cannot answer: SLURM's
queue can, and for a local job its controller process can. Both the handle and the next
submission (which refuses a second live job on a run directory) ask here.
"""

from __future__ import annotations

import psutil

from ..rundir import JobRecord
from ..slurm import ENDED_STATES, SLURM, Scheduler, local_controller


def controller_of(record: JobRecord) -> psutil.Process | None:
    """A local job's controller process, if it still runs (and is not a reused pid)."""
    return local_controller(record.job_id, record.host, record.submitted)


def is_alive(record: JobRecord, scheduler: Scheduler = SLURM) -> bool:
    """Whether the recorded job may still run (queued, running or between requeues)."""
    if record.executor == "slurm":
        return scheduler.queue_state(record.job_id) not in ENDED_STATES
    if record.executor == "local":
        return controller_of(record) is not None
    return False  # the debug executor runs inside the submitting process
