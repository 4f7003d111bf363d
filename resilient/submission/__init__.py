"""Submitting training functions through submitit: `@resilient.job` and the job handle.

`JobOptions` and `EXECUTORS` are exported for `config/`, which turns a job file into options.
Names are imported when first used (`resilient._lazy`): the CLI's `status`, `cancel` and the
like need `JobHandle` and the errors, which import neither torch nor submitit, while `job` and
`launch` run a `Run`, which imports torch, and submit through submitit.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._errors import EXECUTORS, SlurmUnavailable, SubmissionError
    from ._executors import batch_script
    from ._handle import LOST, JobError, JobHandle
    from ._job import Job, job
    from ._launch import launch, refuse_foreign_run_dir
    from ._options import JobOptions
    from ._sweep import SweepTaskLaunch, launch_sweep, refuse_foreign_sweep_dir

__getattr__, __dir__ = lazy_exports(__name__, {
    "._errors": ("EXECUTORS", "SlurmUnavailable", "SubmissionError"),
    "._executors": ("batch_script",),
    "._handle": ("LOST", "JobError", "JobHandle"),
    "._job": ("Job", "job"),
    "._launch": ("launch", "refuse_foreign_run_dir"),
    "._options": ("JobOptions",),
    "._sweep": ("SweepTaskLaunch", "launch_sweep", "refuse_foreign_sweep_dir"),
})

__all__ = [
    "EXECUTORS", "LOST", "Job", "JobError", "JobHandle", "JobOptions", "SlurmUnavailable", "SubmissionError",
    "SweepTaskLaunch", "batch_script", "job", "launch", "launch_sweep", "refuse_foreign_run_dir", "refuse_foreign_sweep_dir",
]
