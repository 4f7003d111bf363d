"""`JobHandle`: a submitted job as users want to see it, across requeues.

submitit's own `job.state` comes from `sacct`, which many clusters (and a cluster without an
accounting database) cannot answer, and it cannot tell "requeued" from "gave up". The run's
status file can, so the handle reads that, and asks the scheduler only whether the job is still
there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import submitit

from ..coordination._signals import signal_number
from ..requeue import _status

TERMINAL_STATES = (_status.COMPLETED, _status.FAILED, _status.GAVE_UP, _status.CANCELLED, _status.STOPPED)
_POLL_S = 0.5


class JobError(RuntimeError):
    """The job ended without a result: failed, gave up after its requeue bound, or was cancelled."""


class JobHandle:
    """A submitted job: id, state, result, logs, and a fire drill."""

    def __init__(self, job: submitit.Job[Any], run_dir: Path, executor: str, warning_signal: str | int) -> None:
        self._job = job
        self._run_dir = run_dir
        self._executor = executor
        self._warning_signal = signal_number(warning_signal, name="warning_signal")

    def __repr__(self) -> str:
        return f"JobHandle(job_id={self.job_id!r}, executor={self._executor!r}, state={self.state!r})"

    @property
    def job_id(self) -> str:
        return str(self._job.job_id)

    @property
    def run_dir(self) -> Path:
        return self._run_dir

    @property
    def status(self) -> _status.Status:
        """The run's status record: state, requeues by cause, last message."""
        return _status.read_status(self._run_dir)

    @property
    def state(self) -> str:
        """pending, running, requeued, completed, failed, gave_up, cancelled or stopped."""
        record = self.status
        return record.state if record.job_id == self.job_id or self._executor == "debug" else "pending"

    def _scheduler_has_it(self) -> bool:
        if self._executor == "slurm":
            listed = subprocess.run(
                ["squeue", "--noheader", "--jobs", self.job_id, "--format", "%T"],
                capture_output=True, text=True, check=False,
            )
            return listed.stdout.strip() not in ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY")
        return not self._job.done()

    def done(self) -> bool:
        """True once the job has ended for good (not merely stopped for a requeue)."""
        if self._executor == "debug":
            return self._job.done()
        return not self._scheduler_has_it()

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
        if self._executor == "debug":
            return self._job.result()
        state = self.wait(timeout)
        if state != _status.COMPLETED:
            raise JobError(f"job {self.job_id} {state}: {self.status.message or 'see its logs'} (run dir {self._run_dir})")
        results = self._job.results()
        return results[0]

    def cancel(self) -> None:
        self._job.cancel()

    def stdout(self, rank: int = 0) -> str:
        return self._log(rank, "stdout")

    def stderr(self, rank: int = 0) -> str:
        return self._log(rank, "stderr")

    def _log(self, rank: int, stream: str) -> str:
        paths = self._job.paths if rank == 0 else submitit.core.utils.JobPaths(self._job.paths.folder, self.job_id, rank)
        path = paths.stdout if stream == "stdout" else paths.stderr
        return path.read_text() if path.exists() else ""

    def preempt(self, rank: int | None = None) -> None:
        """A fire drill: send the warning signal, as the cluster would before preemption.

        On SLURM it reaches every task; on the local executor `rank` picks one task (None: all).
        """
        if self._executor == "slurm":
            name = signal.Signals(self._warning_signal).name.removeprefix("SIG")
            subprocess.run(["scancel", f"--signal={name}", self.job_id], check=True, capture_output=True)
            return
        if self._executor != "local":
            raise ValueError(f"preempt() needs a running slurm or local job, not the {self._executor} executor")
        for process in _local_tasks(int(self.job_id), rank):
            os.kill(process.pid, self._warning_signal)


def _local_tasks(controller_pid: int, rank: int | None) -> list[psutil.Process]:
    """The task processes of a local job, by the rank submitit gave them."""
    tasks = []
    for process in psutil.Process(controller_pid).children(recursive=True):
        try:
            global_id = process.environ().get("SUBMITIT_LOCAL_GLOBALID")
        except psutil.Error:
            continue
        if global_id is not None and (rank is None or int(global_id) == rank):
            tasks.append(process)
    if not tasks:
        raise ValueError(f"no running task{'' if rank is None else f' of rank {rank}'} in local job {controller_pid}")
    return tasks
