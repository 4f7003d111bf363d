"""`@resilient.job`: a training function that runs here, or is submitted, with resume built in."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from ._handle import JobHandle
from ._launch import launch
from ._main import run_function
from ._options import JobOptions

R = TypeVar("R")


class Job(Generic[R]):
    """A function decorated with `@resilient.job`. Call it to run here; `.submit()` to submit it."""

    def __init__(self, function: Callable[..., R], options: JobOptions) -> None:
        if not callable(function):
            raise TypeError(f"@resilient.job decorates a function, not {function!r}")
        self._function = function
        self._options = options
        functools.update_wrapper(self, function)

    @property
    def options(self) -> JobOptions:
        return self._options

    @property
    def run_dir(self) -> Path:
        return self._options.resolved_run_dir(self._function.__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> R | None:
        """Run the function in this process, as the rank its environment says, with resume.

        A run that already completed has nothing left to do: it says so and returns None
        without calling the function (use a new `run_dir` to train again).
        """
        return run_function(self._function, self._options, self.run_dir, args, kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> JobHandle:
        """Submit the function through submitit (the `executor` option) and return its handle.

        Submitting again once the previous job has ended resumes the run from its checkpoints;
        while it still runs, this raises `resilient.RunDirInUse`.
        """
        return launch(self._function, self._options, name=self._function.__name__, args=args, kwargs=kwargs)


@overload
def job(function: Callable[..., R], /) -> Job[R]: ...
@overload
def job(function: None = None, /, **options: Any) -> Callable[[Callable[..., R]], Job[R]]: ...


def job(function: Callable[..., R] | None = None, /, **options: Any) -> Job[R] | Callable[[Callable[..., R]], Job[R]]:
    """Make a training function `fn(run, *args, **kwargs)` resilient.

    `@resilient.job` alone, or with options::

        @resilient.job(checkpoint=ModelCheckpoint(every_n_train_steps=500), executor="slurm",
                       nodes=2, tasks_per_node=4, gpus_per_node=4, timeout_min=240, partition="gpu")
        def train(run, lr=1e-3): ...

        train(lr=3e-4)                 # runs here and now
        handle = train.submit(lr=3e-4) # submits; handle.job_id, .state, .result(), .stdout()

    Options: `checkpoint` (ModelCheckpoint or list), `run_dir` (default runs/<function name>),
    `executor` ("local" default, "slurm", "debug"), resources `nodes` (an int, or a range
    "MIN-MAX" on SLURM: the job runs, and resumes, on the nodes it gets), `tasks_per_node`,
    `gpus_per_node`, `cpus_per_task`, `mem_gb`, `timeout_min`; SLURM `partition`, `account`,
    `qos`, `warning_signal` ("USR2") and `signal_delay_s` (120), `slurm_options` (extra sbatch
    options); requeue policy `max_requeues` (None: no bound) and `max_crash_requeues` (0);
    `on_save_error` ("stop" default, or "continue"), what a failed periodic save does;
    `async_save` (True), whether checkpoints are written in the background; `notify`, a
    `resilient.Notify` told when a start of the job ends (requeued, gave up, failed, completed).
    """
    unknown = sorted(set(options) - set(JobOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(f"resilient.job() got unknown option(s): {', '.join(unknown)}")
    settings = JobOptions(**options)
    if function is not None:
        return Job(function, settings)
    return lambda decorated: Job(decorated, settings)
