"""What every framework integration needs of a `Run`, written once.

Lightning's and Hugging Face's callbacks differ in the framework's hooks and in how its
checkpoints look on disk, not in how they hold the run: the `Run` is the user's (who ends it) or
made by the callback from the same arguments (which then ends it, once); ranks must be one
process each, started by the job; and what to resume from is decided by rank 0 and shared, so
a listing that differs between nodes of a shared file system cannot split the ranks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from ..loop import Run
from ..requeue import SetupRefused
from ..settings import DEFAULT_WARNING_SIGNAL

T = TypeVar("T")


class RefusedValueError(SetupRefused, ValueError):
    """A framework argument resilient cannot honour; the run fails without a requeue."""


class RefusedTypeError(SetupRefused, TypeError):
    """A call resilient makes itself was made with arguments it must choose; no requeue."""


class RefusedRuntimeError(SetupRefused, RuntimeError):
    """The framework is set up in a way that defeats the guarantees; no requeue."""


_REFUSED: dict[type[Exception], type[SetupRefused]] = {
    ValueError: RefusedValueError, TypeError: RefusedTypeError, RuntimeError: RefusedRuntimeError,
}


class RunHolder:
    """The `Run` a callback works for, and whether ending it is the callback's job."""

    def __init__(self, owner: str, run: Run | None, *, run_dir: str | os.PathLike[str] | None = None,
                 warning_signal: str | int = DEFAULT_WARNING_SIGNAL, max_requeues: int | None = None,
                 max_crash_requeues: int = 0, weights_only: bool = True) -> None:
        if run is not None and not isinstance(run, Run):
            raise TypeError(f"{owner}(run): run must be a resilient.Run, not {type(run).__name__}")
        if run is not None and run_dir is not None:
            raise ValueError(f"{owner}(): give run or run_dir, not both (the run has its directory)")
        self.owner = owner
        self.owns = run is None
        self.run = run if run is not None else Run(
            checkpoint=[], run_dir=run_dir, warning_signal=warning_signal, max_requeues=max_requeues,
            max_crash_requeues=max_crash_requeues, weights_only=weights_only, async_save=False)
        self.ended = False

    def check_open(self) -> None:
        if self.ended:
            raise RuntimeError(f"this {self.owner} callback's run has ended; make a new one for another training")

    def end(self, error: BaseException | None) -> None:
        """End a run the callback owns as `error` says (requeued, stopped, failed; None: completed), once.

        A stop raises `RunStopped` (or SystemExit) here, with the exit code the job must end with.
        """
        if not self.owns or self.ended:
            return
        self.ended = True
        self.run.__exit__(type(error) if error is not None else None, error,
                          error.__traceback__ if error is not None else None)

    def refuse(self, kind: type[ValueError | TypeError | RuntimeError], message: str) -> SetupRefused:
        """The error to raise, of `kind` and `SetupRefused` (failed, never requeued), after ending a
        run the callback owns with it: a refused setup must not leave the run directory locked and
        the signals taken (a second try in the same process would be told the directory is in use
        by itself), nor the run shown as running."""
        error = _REFUSED[kind](message)
        self.end(error)
        return error

    def refuse_foreign_launcher(self, framework: str, launched: int | None = None) -> None:
        """The framework must run as many ranks as the job started processes, each joined by the Run."""
        if launched is None:
            launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if launched != self.run.world_size:
            raise self.refuse(RuntimeError, (
                f"{framework} runs {launched} ranks but resilient set up {self.run.world_size}: start one process "
                "per rank (torchrun, srun, resilient submit), not all of them from one `python train.py`"))

    def agreed(self, find: Callable[[], T]) -> T:
        """`find()` as rank 0 sees it, on every rank (every rank calls; only rank 0 runs `find`)."""
        found = find() if self.run.rank == 0 else None
        return self.run.share(found)  # type: ignore[return-value]
