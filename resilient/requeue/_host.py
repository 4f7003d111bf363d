"""Where the job runs decides what a stop means and how it comes back.

- SLURM: the cause is read from the job's own record (a preemption sets PreemptTime; a time
  limit or a user's scancel do not), and the job comes back by its own `scontrol requeue`.
- submitit's local executor: every cause is answered by exiting with submitit's requeue code,
  on which its controller restarts all tasks.
- A plain process: nothing can restart it; it exits with EXIT_STOPPED and its next start resumes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from ..slurm import _scontrol

# Causes of a stop, as recorded in status.json and shown to users.
PREEMPTED = "preempted"
TIME_LIMIT = "time_limit"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"  # a plain process got a stop signal
CTRL_C = "ctrl_c"  # SIGINT: the user stops the run where it stands; it never requeues
CRASHED = "crashed"

EXIT_STOPPED = 75  # EX_TEMPFAIL: checkpointed and stopped; start it again to resume
EXIT_CTRL_C = 130  # the shell's 128 + SIGINT, what a script stopped by Ctrl-C exits with
LOCAL_REQUEUE_EXIT = 144  # submitit's local executor restarts every task when one exits with it
_TIME_SLACK_S = 5.0
# Set in jobs resilient submits: how long before the time limit SLURM sends the warning signal.
SIGNAL_DELAY_ENV = "RESILIENT_SIGNAL_DELAY_S"
_UNKNOWN_WARNING_WINDOW_S = 300.0
_EARLY_WARNING_S = 60.0  # SLURM checks limits in a ~30 s loop: warnings come up to that much early


def _slurm_time(raw: str | None) -> float | None:
    try:
        return time.mktime(time.strptime(raw or "", "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _minutes(raw: str | None) -> float | None:
    """SLURM's TimeLimit ([days-]hours:minutes:seconds, or minutes) in seconds; None if unlimited."""
    if not raw or raw in ("UNLIMITED", "Partition_Limit", "NONE"):
        return None
    days, _, rest = raw.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts[-3:]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


@dataclass
class Host:
    """A plain process: no scheduler to ask, no way to come back by itself."""

    job_id: str | None = None
    kind: str = "process"
    can_requeue: bool = False

    def end_time(self) -> float | None:
        return None

    def classify(self, received: set[int], warning_signal: int, deadline_hit: bool) -> str:
        return INTERRUPTED

    def requeue(self, cause: str) -> int:
        """Arrange for the job to come back; returns the exit code to leave with."""
        return EXIT_STOPPED


@dataclass
class LocalHost(Host):
    """A task of submitit's local executor (its controller restarts all tasks on exit 144)."""

    kind: str = "local"
    can_requeue: bool = True

    def end_time(self) -> float | None:
        # The controller times each (re)start of the tasks from when it launched them.
        timeout = os.environ.get("SUBMITIT_LOCAL_TIMEOUT_S")
        return psutil.Process().create_time() + float(timeout) if timeout else None

    def classify(self, received: set[int], warning_signal: int, deadline_hit: bool) -> str:
        # The controller sends the warning signal `signal_delay_s` before its timeout; earlier
        # it can only be a fire drill or someone else's signal, which stands for a preemption.
        end, delay = self.end_time(), float(os.environ.get("SUBMITIT_LOCAL_SIGNAL_DELAY_S", "0"))
        near_end = end is not None and time.time() >= end - delay - _TIME_SLACK_S
        return TIME_LIMIT if deadline_hit or (warning_signal in received and near_end) else PREEMPTED

    def requeue(self, cause: str) -> int:
        return LOCAL_REQUEUE_EXIT


@dataclass
class SlurmHost(Host):
    """A task of a SLURM job; `job_id` is what scontrol needs (ARRAY_TASK for arrays)."""

    kind: str = "slurm"
    can_requeue: bool = True
    signal_delay_s: float | None = None

    def end_time(self) -> float | None:
        assert self.job_id is not None
        return _slurm_time(_scontrol.show_job(self.job_id).get("EndTime"))

    def classify(self, received: set[int], warning_signal: int, deadline_hit: bool) -> str:
        """Read the cause from the job's record, as observed on a real cluster (slurm/README.md).

        A preemption sets PreemptTime while the job still runs; the time limit shows as
        Reason=TimeLimit (or the clock is past StartTime + TimeLimit); a user's scancel turns the
        job COMPLETING with none of these; the warning signal close to the limit is the time-limit
        warning, and anywhere else a fire drill, which is treated as a preemption.
        """
        assert self.job_id is not None
        job = _scontrol.show_job(self.job_id)
        state, now = job.get("JobState", ""), time.time()
        start, limit = _slurm_time(job.get("StartTime")), _minutes(job.get("TimeLimit"))
        natural_end = start + limit if start is not None and limit is not None else None
        if job.get("PreemptTime", "None") not in ("None", ""):
            return PREEMPTED
        if deadline_hit or job.get("Reason") == "TimeLimit" or (natural_end is not None and now >= natural_end - _TIME_SLACK_S):
            return TIME_LIMIT
        if state in ("COMPLETING", "CANCELLED"):
            return CANCELLED
        window = self.signal_delay_s if self.signal_delay_s is not None else _UNKNOWN_WARNING_WINDOW_S
        if warning_signal in received and natural_end is not None and natural_end - now <= window + _EARLY_WARNING_S:
            return TIME_LIMIT
        return PREEMPTED

    def requeue(self, cause: str) -> int:
        # Always the job's own request, in every PreemptMode: SLURM requeues only jobs it kills at
        # the end of the grace time, and one that exits earlier (as we do, once checkpointed)
        # would be finished. SLURM kills the job's steps at once: this must come last.
        assert self.job_id is not None
        _scontrol.requeue(self.job_id)
        return 0


def detect_host(env: Mapping[str, str] = os.environ) -> Host:
    """The host this process runs on, from the environment its launcher set."""
    if env.get("SUBMITIT_EXECUTOR") == "local":
        return LocalHost(job_id=env.get("SUBMITIT_LOCAL_JOB_ID"))
    job_id = _scontrol.job_id_from_env(env)
    if job_id is not None:
        delay = env.get(SIGNAL_DELAY_ENV)
        return SlurmHost(job_id=job_id, signal_delay_s=float(delay) if delay else None)
    return Host()

