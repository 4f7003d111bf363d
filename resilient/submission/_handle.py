"""`JobHandle`: a submitted job as users want to see it, across requeues.

submitit's own `job.state` comes from `sacct`, which many clusters (and a cluster without an
accounting database) cannot answer, and it cannot tell "requeued" from "gave up". The run's
status file can, so the handle reads that, and asks the scheduler only whether the job is still
there. A handle can be rebuilt from the run directory alone (`JobHandle.attach`), which is how
the command line reaches a job submitted by another process.

A rebuilt handle makes submitit's own job object only when it needs one (for a result), so that
`resilient status`, `logs`, `cancel` and `preempt` do not import submitit (50 to 100 ms).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..rundir import (
    RECORD_FILE,
    Event,
    JobRecord,
    State,
    Status,
    append_event,
    read_record,
    read_status,
    update_status,
)
from ..slurm import SLURM, WAITING_STATES, Scheduler, local_tasks
from ._liveness import controller_of, is_alive

if TYPE_CHECKING:
    import submitit

TERMINAL_STATES = (State.COMPLETED, State.FAILED, State.GAVE_UP, State.CANCELLED, State.STOPPED)
PENDING = "pending"
LOST = "lost"  # the scheduler no longer has the job, but it never said how it ended
_POLL_S = 0.5


class JobError(RuntimeError):
    """The job ended without a result: failed, gave up after its requeue bound, or was cancelled."""


def _submitit_job(run_dir: Path, record: JobRecord) -> submitit.Job[Any]:
    import submitit
    from submitit.local.local import LocalJob

    folder, tasks = record.submitit_folder(run_dir), list(range(record.tasks))
    if record.executor == "slurm":
        return submitit.SlurmJob(folder, record.job_id, tasks=tasks)
    return LocalJob(folder, record.job_id, tasks=tasks)


class JobHandle:
    """A submitted job: id, state, result, logs, cancel, and a fire drill."""

    def __init__(self, run_dir: Path, record: JobRecord, job: submitit.Job[Any] | None = None,
                 scheduler: Scheduler = SLURM) -> None:
        self._run_dir = run_dir
        self._record = record
        self._job = job  # None until `_submitit` needs it, in a handle rebuilt from the run directory
        self._scheduler = scheduler

    @classmethod
    def attach(cls, run_dir: str | os.PathLike[str], scheduler: Scheduler = SLURM) -> JobHandle:
        """The handle of the job last submitted in `run_dir` (ValueError if none; DamagedFile: job.json unreadable)."""
        path = Path(run_dir).absolute()
        record = read_record(path)
        if record is None:
            raise ValueError(f"{path} holds no submitted job (no {RECORD_FILE})")
        return cls(path, record, scheduler=scheduler)

    def __repr__(self) -> str:
        return f"JobHandle(job_id={self.job_id!r}, executor={self.executor!r}, state={self.state!r})"

    @property
    def job_id(self) -> str:
        return self._record.job_id

    @property
    def executor(self) -> str:
        return self._record.executor

    @property
    def record(self) -> JobRecord:
        return self._record

    @property
    def run_dir(self) -> Path:
        return self._run_dir

    @property
    def status(self) -> Status:
        """The run's status record: state, requeues by cause, last message."""
        return read_status(self._run_dir)

    @property
    def state(self) -> str:
        """pending, running, requeued, completed, failed, gave_up, cancelled, stopped, or lost."""
        record = self.status
        state = record.state.value  # a plain string, as PENDING and LOST are
        if self.executor == "debug":
            return state  # it runs inside this process, when its result is asked for
        ours = record.job_id == self.job_id
        if ours and record.state in TERMINAL_STATES:
            return state
        if self._alive():
            return state if ours else PENDING
        return LOST

    def _submitit(self) -> submitit.Job[Any]:
        """submitit's job object: the one submitting made, else one rebuilt from the run directory."""
        if self._job is None:
            self._job = _submitit_job(self._run_dir, self._record)
        return self._job

    def _alive(self) -> bool:
        if self.executor == "local" and self._job is not None and getattr(self._job, "_process", None) is not None:
            return not self._job.done()  # our own child: polling it also reaps it
        return is_alive(self._record, self._scheduler)

    def done(self) -> bool:
        """True once the job has ended for good (not merely stopped for a requeue)."""
        if self.executor == "debug":
            return self._submitit().done()
        return not self._alive()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends for good; returns its final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} still {self.state} after {timeout} s")
            time.sleep(_POLL_S)
        return self.state

    def result(self, timeout: float | None = None) -> Any:
        """The function's return value (rank 0's); JobError if the job did not complete."""
        if self.executor == "debug":
            return self._submitit().result()
        state = self.wait(timeout)
        if state != State.COMPLETED:
            raise JobError(f"job {self.job_id} {state}: {self.status.message or 'see its logs'} (run dir {self._run_dir})")
        return self._submitit().task(0).result()  # rank 0 is there however many nodes the job got

    def cancel(self) -> bool:
        """Stop the job for good: it takes an emergency checkpoint and ends as `cancelled`.

        SLURM's scancel sends SIGTERM, which the job recognises as a cancellation. A local job
        gets SIGTERM too, after the status file says it was cancelled, since a local SIGTERM
        alone cannot be told from a preemption. A job that is not running (queued, or held
        by SLURM after a requeue) has nothing to checkpoint and no process to say how it
        ended, so it is recorded as cancelled here, its checkpoints kept. Returns True then.
        """
        if self.executor not in ("slurm", "local"):
            raise ValueError(f"cancel() needs a slurm or local job, not the {self.executor} executor")
        if self.executor == "local":
            with update_status(self._run_dir) as record:
                record.cancel_requested = True
        append_event(self._run_dir, Event.CANCEL_REQUESTED, job_id=self.job_id)
        if self.executor == "slurm":
            waiting = self._scheduler.queue_state(self.job_id) in WAITING_STATES
            self._scheduler.cancel(self.job_id)
        else:
            controller = controller_of(self._record)
            tasks = local_tasks(controller, None)
            if not tasks and controller is not None:  # between restarts: ask the controller itself, as submitit would
                controller.send_signal(signal.SIGINT)
            for task in tasks:
                task.send_signal(signal.SIGTERM)
            waiting = not tasks
        if waiting:
            self._record_cancelled_while_waiting()
        return waiting

    def _record_cancelled_while_waiting(self) -> None:
        message = "cancelled while waiting to start; its checkpoints stay, submitting again resumes it"
        with update_status(self._run_dir) as record:
            record.state, record.message = State.CANCELLED, message
        append_event(self._run_dir, Event.CANCELLED, job_id=self.job_id, message=message,
                     requeues=dict(record.requeues))

    def log_path(self, rank: int = 0, stream: str = "stdout") -> Path:
        """Where rank `rank`'s stdout or stderr goes (the same file across requeues).

        submitit names these files (`JobPaths.stdout`, `.stderr`); they are spelled here so that
        `resilient logs` need not import submitit, and tests/submission/test_log_paths.py checks
        that both name the same files. An array task's logs are in its sweep's shared folder.
        """
        suffix = "out" if stream == "stdout" else "err"
        return self._record.submitit_folder(self._run_dir) / f"{self.job_id}_{rank}_log.{suffix}"

    def stdout(self, rank: int = 0) -> str:
        return _text(self.log_path(rank, "stdout"))

    def stderr(self, rank: int = 0) -> str:
        return _text(self.log_path(rank, "stderr"))

    def preempt(self, rank: int | None = None) -> None:
        """A fire drill: send the warning signal, as the cluster would before preemption.

        On SLURM it reaches every task; on the local executor `rank` picks one task (None: all).
        """
        warning = self._record.warning_signal
        if self.executor == "slurm":
            append_event(self._run_dir, Event.FIRE_DRILL, job_id=self.job_id, rank=rank)
            self._scheduler.cancel(self.job_id, warning)
            return
        if self.executor != "local":
            raise ValueError(f"preempt() needs a running slurm or local job, not the {self.executor} executor")
        tasks = local_tasks(controller_of(self._record), rank)
        if not tasks:
            raise ValueError(f"no running task{'' if rank is None else f' of rank {rank}'} in local job {self.job_id}")
        append_event(self._run_dir, Event.FIRE_DRILL, job_id=self.job_id, rank=rank)
        for task in tasks:
            task.send_signal(warning)


def _text(log: Path) -> str:
    """A log as text; what a job printed need not be UTF-8."""
    return log.read_text(errors="replace") if log.exists() else ""
