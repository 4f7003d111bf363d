"""The one place resilient runs SLURM's commands (`sbatch` aside: submitit runs it).

`Scheduler` is what the rest of the package asks of SLURM; `SlurmCommands` answers it by running
`scontrol`, `squeue` and `scancel`. Code that decides something from the answers takes a
Scheduler (the real one by default), so tests can hand it one built from recorded output.
Each call is a round trip to slurmctld: they are made at start, when stopping, and when a user
asks, never per step.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Protocol

from ..settings import signal_name
from ._parse import UNKNOWN_STATE, JobInfo, parse_job, parse_queue_state

SCONTROL_TIMEOUT_S = 60  # slurmctld can be slow when busy; a requeue must not be given up lightly
_SUBMIT_COMMANDS = ("sbatch", "srun")  # to submit, and what the batch script runs the tasks with


class SlurmCommandError(RuntimeError):
    """An scontrol call failed; the message carries its command line and stderr."""


class Scheduler(Protocol):
    """What resilient asks of SLURM about one job."""

    def show_job(self, job_id: str) -> JobInfo:
        """The job's record (`scontrol show job`); SlurmCommandError if it cannot be read."""
        ...

    def requeue(self, job_id: str) -> None:
        """Put the job back in the queue (`scontrol requeue`); SLURM kills its steps at once."""
        ...

    def queue_state(self, job_id: str) -> str:
        """The job's state in the queue: '' once it has left it, UNKNOWN_STATE without squeue."""
        ...

    def cancel(self, job_id: str, signum: int | None = None) -> None:
        """End the job, or only send it `signum` (`scancel`); ValueError saying why if refused."""
        ...


def missing_submit_commands() -> list[str]:
    """The commands a SLURM submission needs that this machine's PATH lacks ([]: it can submit)."""
    return [command for command in _SUBMIT_COMMANDS if shutil.which(command) is None]


def _scontrol(*args: str) -> str:
    command = ["scontrol", *args]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SlurmCommandError(f"{shlex.join(command)}: {error}") from None
    if done.returncode != 0:
        raise SlurmCommandError(f"{shlex.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _scancel(*args: str) -> None:
    try:
        done = subprocess.run(["scancel", *args], capture_output=True, text=True, check=False)
    except OSError as error:
        raise ValueError(f"scancel {' '.join(args)}: {error.strerror} (is SLURM available here?)") from None
    if done.returncode != 0:
        raise ValueError(f"scancel {' '.join(args)}: {done.stderr.strip() or f'exit code {done.returncode}'}")


class SlurmCommands:
    """The Scheduler of a machine with SLURM's commands on its PATH."""

    def show_job(self, job_id: str) -> JobInfo:
        return parse_job(_scontrol("show", "job", "--oneliner", job_id))

    def requeue(self, job_id: str) -> None:
        _scontrol("requeue", job_id)

    def queue_state(self, job_id: str) -> str:
        try:
            listed = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format", "%T"],
                                    capture_output=True, text=True, check=False)
        except OSError:
            return UNKNOWN_STATE
        return parse_queue_state(listed.stdout)

    def cancel(self, job_id: str, signum: int | None = None) -> None:
        if signum is None:
            _scancel(job_id)
        else:
            _scancel(f"--signal={signal_name(signum, name='signal')}", job_id)


SLURM: Scheduler = SlurmCommands()  # the default everywhere a Scheduler is taken
