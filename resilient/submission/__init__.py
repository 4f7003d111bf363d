"""Submitting training functions through submitit: `@resilient.job` and the job handle."""

from ._handle import JobError, JobHandle
from ._job import Job, job

__all__ = ["Job", "JobError", "JobHandle", "job"]
