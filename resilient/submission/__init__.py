"""Submitting training functions through submitit: `@resilient.job` and the job handle.

`JobOptions` and `EXECUTORS` are exported for `config/`, which turns a job file into options.
"""

from ._executors import SlurmUnavailable, SubmissionError, batch_script
from ._handle import LOST, JobError, JobHandle
from ._job import Job, job
from ._launch import launch, refuse_foreign_run_dir
from ._options import EXECUTORS, JobOptions

__all__ = [
    "EXECUTORS", "LOST", "Job", "JobError", "JobHandle", "JobOptions", "SlurmUnavailable", "SubmissionError", "batch_script",
    "job", "launch", "refuse_foreign_run_dir",
]
