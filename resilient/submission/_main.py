"""What runs inside each task of a submitted job: torch.distributed from the job, then the Run.

submitit has already installed its handlers when the task gets here: SIGTERM and SIGCONT log
"Bypassing signal ..." as warnings, which SLURM sends at every preemption, requeue and
scancel. The Run takes SIGTERM over while it is active; before and after it, both signals are
answered as submitit answers them (SIGTERM ignored until SLURM's SIGKILL, SIGCONT continues),
only without a warning in the rank's log at every stop.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

import submitit
from submitit.core.job_environment import SignalHandler

from ..loop import Run, schedule_fire_drill
from ._options import JobOptions

R = TypeVar("R")


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside the Run: the job has not started training yet, or has concluded."""


def _quiet_submitit_handlers() -> None:
    """Replace submitit's bypassing handlers (only those: the debug executor runs in the user's process)."""
    for signum, quiet in ((signal.SIGTERM, _ignore), (signal.SIGCONT, signal.SIG_DFL)):
        if isinstance(getattr(signal.getsignal(signum), "__self__", None), SignalHandler):
            signal.signal(signum, quiet)


class JobMain(Generic[R]):
    """The callable submitit pickles: the user's function, its arguments and the job's options."""

    def __init__(self, function: Callable[..., R], options: JobOptions, run_dir: Path,
                 args: tuple[Any, ...], kwargs: dict[str, Any], fire_drill_step: int | None = None) -> None:
        self.function, self.options, self.run_dir = function, options, run_dir
        self.args, self.kwargs = args, kwargs
        self.fire_drill_step = fire_drill_step

    def __call__(self) -> R | None:
        _quiet_submitit_handlers()
        environment = submitit.JobEnvironment()
        if environment.num_tasks > 1:
            # MASTER_ADDR is the first node, MASTER_PORT derives from the job id: both stay the
            # same when the job is requeued, so a restarted rank finds its peers again.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        return run_function(self.function, self.options, self.run_dir, self.args, self.kwargs,
                            fire_drill_step=self.fire_drill_step)


def run_function(function: Callable[..., R], options: JobOptions, run_dir: Path, args: tuple[Any, ...],
                 kwargs: dict[str, Any], *, fire_drill_step: int | None = None) -> R | None:
    """Call `function(run, ...)` inside a Run; a run that already completed says so and returns None."""
    with Run(**options.run_arguments(run_dir)) as run:
        if run.completed_before:
            if run.rank == 0:
                print(f"resilient: {run_dir} already completed; nothing to do (use a new run_dir to train again)",
                      file=sys.stderr, flush=True)
            return None
        schedule_fire_drill(run, fire_drill_step)
        return function(run, *args, **kwargs)
