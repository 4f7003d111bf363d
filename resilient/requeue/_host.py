"""Where the job runs decides what a stop means and how it comes back.

- SLURM: the cause is read from the job's own record (a preemption sets PreemptTime; a time
  limit or a user's scancel do not), and the job comes back by its own `scontrol requeue`.
- submitit's local executor: every cause is answered by exiting with submitit's requeue code,
  on which its controller restarts all tasks.
- A plain process: nothing can restart it; it exits with EXIT_STOPPED and its next start resumes.

A host gathers what the pure classification in `_cause.py` needs: it wraps the scheduler it
asks and the clock it reads, so both can be replaced in tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from ..slurm import SLURM, Scheduler, job_id_from_env, local_end_time
from ._cause import Cause, classify_local, classify_slurm

EXIT_STOPPED = 75  # EX_TEMPFAIL: checkpointed and stopped; start it again to resume
EXIT_CTRL_C = 130  # the shell's 128 + SIGINT, what a script stopped by Ctrl-C exits with
LOCAL_REQUEUE_EXIT = 144  # submitit's local executor restarts every task when one exits with it
# Set in jobs resilient submits: how long before the time limit SLURM sends the warning signal.
SIGNAL_DELAY_ENV = "RESILIENT_SIGNAL_DELAY_S"


@dataclass
class Host:
    """A plain process: no scheduler to ask, no way to come back by itself."""

    job_id: str | None = None
    kind: str = "process"
    can_requeue: bool = False

    def end_time(self) -> float | None:
        """Unix time at which the scheduler ends the job, if it will."""
        return None

    def classify(self, received: Collection[int], warning_signal: int, deadline_hit: bool) -> Cause:
        return Cause.INTERRUPTED

    def requeue(self, cause: Cause) -> int:
        """Arrange for the job to come back; returns the exit code to leave with."""
        return EXIT_STOPPED


@dataclass
class LocalHost(Host):
    """A task of submitit's local executor (its controller restarts all tasks on exit 144)."""

    kind: str = "local"
    can_requeue: bool = True
    timeout_s: float | None = None  # the controller's timeout of each (re)start; None: none
    signal_delay_s: float = 0.0  # how long before it the controller sends the warning signal
    clock: Callable[[], float] = time.time

    def end_time(self) -> float | None:
        return local_end_time(self.timeout_s)

    def classify(self, received: Collection[int], warning_signal: int, deadline_hit: bool) -> Cause:
        end = self.end_time()
        return classify_local(end, self.signal_delay_s, received, warning_signal, deadline_hit, now=self.clock())

    def requeue(self, cause: Cause) -> int:
        return LOCAL_REQUEUE_EXIT


@dataclass
class SlurmHost(Host):
    """A task of a SLURM job; `job_id` is what scontrol needs (ARRAY_TASK for arrays)."""

    kind: str = "slurm"
    can_requeue: bool = True
    signal_delay_s: float | None = None
    scheduler: Scheduler = SLURM
    clock: Callable[[], float] = time.time

    def _job_id(self) -> str:
        assert self.job_id is not None
        return self.job_id

    def end_time(self) -> float | None:
        return self.scheduler.show_job(self._job_id()).end_time

    def classify(self, received: Collection[int], warning_signal: int, deadline_hit: bool) -> Cause:
        job = self.scheduler.show_job(self._job_id())
        return classify_slurm(job, received, warning_signal, deadline_hit, now=self.clock(),
                              signal_delay_s=self.signal_delay_s)

    def requeue(self, cause: Cause) -> int:
        # Always the job's own request, in every PreemptMode: SLURM requeues only jobs it kills at
        # the end of the grace time, and one that exits earlier (as we do, once checkpointed)
        # would be finished. SLURM kills the job's steps at once: this must come last.
        self.scheduler.requeue(self._job_id())
        return 0


def detect_host(env: Mapping[str, str] = os.environ, scheduler: Scheduler = SLURM) -> Host:
    """The host this process runs on, from the environment its launcher set."""
    if env.get("SUBMITIT_EXECUTOR") == "local":
        timeout = env.get("SUBMITIT_LOCAL_TIMEOUT_S")
        return LocalHost(job_id=env.get("SUBMITIT_LOCAL_JOB_ID"), timeout_s=float(timeout) if timeout else None,
                         signal_delay_s=float(env.get("SUBMITIT_LOCAL_SIGNAL_DELAY_S", "0")))
    job_id = job_id_from_env(env)
    if job_id is not None:
        delay = env.get(SIGNAL_DELAY_ENV)
        return SlurmHost(job_id=job_id, signal_delay_s=float(delay) if delay else None, scheduler=scheduler)
    return Host()
