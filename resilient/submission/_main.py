"""What runs inside each task of a submitted job: torch.distributed from the job, then the Run.

submitit has already installed its handlers when the task gets here: SIGTERM and SIGCONT log
"Bypassing signal ..." as warnings, which SLURM sends at every preemption, requeue and
scancel. The Run takes SIGTERM over while it is active; before and after it, both signals are
answered as submitit answers them (SIGTERM ignored until SLURM's SIGKILL, SIGCONT continues),
only without a warning in the rank's log at every stop.

A task is the one process resilient owns: once its Run has stopped at a boundary (`RunStopped`),
with the emergency checkpoint committed and the end recorded, it leaves at once instead of
paying the interpreter's teardown with torch loaded (`_leave_now`).
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Generic, NoReturn, TypeVar

import submitit
from submitit.core.job_environment import SignalHandler

from ..loop import Run, RunStopped, schedule_fire_drill
from ..rundir import Tracker
from ._options import JobOptions

R = TypeVar("R")


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside the Run: the job has not started training yet, or has concluded."""


def _quiet_submitit_handlers() -> bool:
    """Replace submitit's bypassing handlers (only those: the debug executor runs in the user's process).

    Returns whether there were any: submitit installs them only in the task processes it starts
    (local and SLURM), so True means this process is a task, which resilient owns.
    """
    found = False
    for signum, quiet in ((signal.SIGTERM, _ignore), (signal.SIGCONT, signal.SIG_DFL)):
        if isinstance(getattr(signal.getsignal(signum), "__self__", None), SignalHandler):
            signal.signal(signum, quiet)
            found = True
    return found


def _leave_now(code: int) -> NoReturn:
    """End the task after its Run stopped, as the interpreter would but without its teardown.

    Freeing every module and object with torch loaded is most of the time between the committed
    emergency checkpoint and the process's end, time a preempted job may not have. What the
    interpreter does at exit is kept, in its order: wait for non-daemon threads, run the atexit
    handlers (logging's flush, the DataLoader workers' and multiprocessing's cleanup, a metrics
    tracker's finish), flush Python's and C's stdio. What is skipped is finalizing the objects
    still alive: a file the training code opened at module level and never flushed loses its
    buffer. Only a task takes this way out, never a user's own script or the debug executor (the
    user's process), where code after the `with Run(...)` block must run.
    """
    # The interpreter's own two calls, in its order: threading's exit hooks (which tell idle
    # ThreadPoolExecutor workers to end) and the join of non-daemon threads, then atexit.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # replaced by None, closed, or its disk is full
            pass
    ctypes.CDLL(None).fflush(None)  # what C and C++ code (torch's own) printed, still buffered
    os._exit(code)


class JobMain(Generic[R]):
    """The callable submitit pickles: the user's function, its arguments and the job's options."""

    def __init__(self, function: Callable[..., R], options: JobOptions, run_dir: Path,
                 args: tuple[Any, ...], kwargs: dict[str, Any], fire_drill_step: int | None = None) -> None:
        self.function, self.options, self.run_dir = function, options, run_dir
        self.args, self.kwargs = args, kwargs
        self.fire_drill_step = fire_drill_step

    def __call__(self) -> R | None:
        task = _quiet_submitit_handlers()
        environment = submitit.JobEnvironment()
        if environment.num_tasks > 1:
            # MASTER_ADDR is the first node, MASTER_PORT derives from the job id: both stay the
            # same when the job is requeued, so a restarted rank finds its peers again.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        try:
            return run_function(self.function, self.options, self.run_dir, self.args, self.kwargs,
                                fire_drill_step=self.fire_drill_step)
        except RunStopped as stop:
            if task:
                _leave_now(int(stop.code or 0))
            raise


@contextmanager
def _wandb_environment(run: Run) -> Iterator[None]:
    """Where W&B is installed, every `wandb.init()` of the job continues the run's one W&B run:
    ``WANDB_RUN_ID`` names it (`Run.tracker_id`) and ``WANDB_RESUME=allow``, which `wandb.init`
    reads when its caller does not say (Lightning's `WandbLogger`, Hugging Face's `WandbCallback`
    and plain ``wandb.init()`` alike). What the user set stays; the variables go after the job."""
    if "WANDB_RUN_ID" in os.environ or importlib.util.find_spec("wandb") is None:
        yield
        return
    before = os.environ.get("WANDB_RESUME")
    os.environ["WANDB_RUN_ID"] = run.tracker_id(Tracker.WANDB)
    os.environ.setdefault("WANDB_RESUME", "allow")
    try:
        yield
    finally:
        os.environ.pop("WANDB_RUN_ID", None)
        if before is None:
            os.environ.pop("WANDB_RESUME", None)


def run_function(function: Callable[..., R], options: JobOptions, run_dir: Path, args: tuple[Any, ...],
                 kwargs: dict[str, Any], *, fire_drill_step: int | None = None) -> R | None:
    """Call `function(run, ...)` inside a Run; a run that already completed says so and returns None."""
    with Run(**options.run_arguments(run_dir)) as run, _wandb_environment(run):
        if run.completed_before:
            if run.rank == 0:
                print(f"resilient: {run_dir} already completed; nothing to do (use a new run_dir to train again)",
                      file=sys.stderr, flush=True)
            return None
        schedule_fire_drill(run, fire_drill_step)
        return function(run, *args, **kwargs)
