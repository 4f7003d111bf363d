"""What runs inside each task of a submitted job: torch.distributed from the job, then the Run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import submitit

from ..loop.run import Run
from ._options import JobOptions

R = TypeVar("R")


class JobMain(Generic[R]):
    """The callable submitit pickles: the user's function, its arguments and the job's options."""

    def __init__(self, function: Callable[..., R], options: JobOptions, run_dir: Path,
                 args: tuple[Any, ...], kwargs: dict[str, Any], fire_drill_step: int | None = None) -> None:
        self.function, self.options, self.run_dir = function, options, run_dir
        self.args, self.kwargs = args, kwargs
        self.fire_drill_step = fire_drill_step

    def __call__(self) -> R:
        environment = submitit.JobEnvironment()
        if environment.num_tasks > 1:
            # MASTER_ADDR is the first node, MASTER_PORT derives from the job id: both stay the
            # same when the job is requeued, so a restarted rank finds its peers again.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        with Run(**self.options.run_arguments(self.run_dir)) as run:
            run._fire_drill_at = self.fire_drill_step
            return self.function(run, *self.args, **self.kwargs)
