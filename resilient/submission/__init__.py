"""Submitting training functions through submitit: `@resilient.job` and the job handle.

`JobOptions` and `EXECUTORS` are exported for `config/`, which turns a job file into options.
"""

from ._handle import JobError, JobHandle
from ._job import Job, job
from ._options import EXECUTORS, JobOptions

__all__ = ["EXECUTORS", "Job", "JobError", "JobHandle", "JobOptions", "job"]
