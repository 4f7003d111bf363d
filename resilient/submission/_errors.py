"""What the command line needs of submission before anything is submitted: the executors' names
and the errors a submission raises.

They live apart from `_executors.py`, which imports submitit (50 to 100 ms): every command
catches `SubmissionError` and `resilient submit --help` lists the executors, and neither should
make `resilient --help`, `status` or `logs` pay for submitit.
"""

from __future__ import annotations

from ..rundir import Executor

EXECUTORS = tuple(executor.value for executor in Executor)


class SubmissionError(RuntimeError):
    """The job could not be submitted (the scheduler is missing, or refused it); nothing was left behind."""


class SlurmUnavailable(SubmissionError):
    """A SLURM job, on a machine without SLURM's commands."""
