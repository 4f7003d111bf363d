"""A Scheduler that answers from recorded `scontrol show job` output, and a clock set by it.

The fast tests of classify, policy, deadline and conclusion run against this instead of a
cluster: what SLURM said is read from `recorded/`, what the job asked of it is written down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from resilient.slurm import (
    JobInfo,
    SlurmCommandError,
    parse_job,
    parse_queue_state,
    parse_time,
)

RECORDED = Path(__file__).parent / "recorded"


def recording(name: str) -> str:
    return (RECORDED / f"{name}.txt").read_text()


def at(slurm_time: str) -> float:
    """A SLURM date as Unix time, read as the job reads the recorded ones (local time)."""
    when = parse_time(slurm_time)
    assert when is not None
    return when


@dataclass
class RecordedScheduler:
    """SLURM as recorded in `recorded/<name>.txt`; `refuse_requeue` makes `scontrol requeue` fail."""

    name: str
    queue_state_text: str = "RUNNING\n"
    refuse_requeue: bool = False
    asked: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    cancelled: list[tuple[str, int | None]] = field(default_factory=list)

    def show_job(self, job_id: str) -> JobInfo:
        self.asked.append(job_id)
        return parse_job(recording(self.name))

    def requeue(self, job_id: str) -> None:
        if self.refuse_requeue:
            raise SlurmCommandError(f"scontrol requeue {job_id} exited 1: Requested operation is presently disabled")
        self.requeued.append(job_id)

    def queue_state(self, job_id: str) -> str:
        return parse_queue_state(self.queue_state_text)

    def cancel(self, job_id: str, signum: int | None = None) -> None:
        self.cancelled.append((job_id, signum))
