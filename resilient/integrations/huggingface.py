"""Hugging Face's `Trainer` (and plain Accelerate loops) with resilient's preemption handling and resume.

The Trainer drives its own loop and writes its own checkpoints (``<output_dir>/checkpoint-N``:
weights, optimizer, scheduler, `trainer_state.json`, one `rng_state_{rank}.pth` per rank). Alone
it does not survive a cluster: it writes that directory in place, without fsync, so a kill leaves
a ``checkpoint-N`` that looks like any other; `resume_from_checkpoint=True` takes the
highest-numbered directory whatever it holds; `save_total_limit` rotation runs *before* the new
directory is finished and keeps the newest by modification time, so it deletes the last good
checkpoint to make room for one that may never be complete; and its optional SIGTERM handler
(`enable_jit_checkpoint`) saves on each rank alone, after a timer, with no agreement on the step.

`Resilient`, a `TrainerCallback`, puts resilient's machinery behind the Trainer's hooks:

- Stop: after every optimizer step (`on_step_end`) every rank asks the `Run` whether to stop (a
  signal seen by any rank, the deadline, a fire drill); on a stop it sets `control.should_save`,
  so the Trainer's own `_save_checkpoint` writes ``checkpoint-N`` at that very step, and
  `on_save` commits it and leaves through `Run.stopped` (requeue or exit by the run's policy).
- Commit: the Trainer cannot be made to write into a temporary directory and rename it (the
  path is built inside `_save_checkpoint`, and overriding it would mean subclassing the Trainer
  and following its private code). So the commit is the manifest instead: in `on_save`, after
  every rank has written its files, rank 0 fsyncs and hashes every file and writes MANIFEST.json
  atomically (`checkpoint.seal_checkpoint`). Only a ``checkpoint-N`` whose manifest verifies,
  every byte, is ever resumed from; one without is what a kill during the save left.
- Rotation: the callback takes `save_total_limit` over (it sets the Trainer's to None, so the
  Trainer deletes nothing) and applies it after each commit, counting only committed
  checkpoints: a newer damaged or unfinished directory never pushes the last valid one out. The
  best checkpoint (`load_best_model_at_end`) and the one resumed from are kept too.
- Resume: when the Trainer is made (`on_init_end`), rank 0 verifies the ``checkpoint-N``
  directories newest first; damaged ones are skipped with a warning naming the bad file and
  moved aside, never deleted (training writes that step again, in place, and must not mix with
  their files; a directory some other tool wrote without a manifest may be sound), and
  every rank gets the same answer. `train(trainer)` passes it as `resume_from_checkpoint`; the
  Trainer itself restores weights, optimizer, scheduler, each rank's RNG states and the data
  position (it skips the batches of the resumed epoch).

`AcceleratorCheckpoints` does the same for a loop written with Accelerate: `save_state` into a
temporary directory, sealed and renamed into place, `load_state` from the newest valid one, and
the per-step stop agreement.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from accelerate import Accelerator
    from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput
except ModuleNotFoundError as missing:  # the optional extra is not installed
    raise ImportError(f"resilient.integrations.huggingface needs transformers and accelerate ({missing}): "
                      "pip install 'resilient[huggingface]'") from None

from ..checkpoint import (
    CHECKPOINT_SUFFIX,
    CheckpointError,
    CheckpointKind,
    CheckpointOrigin,
    Manifest,
    make_temporary,
    newest_checkpoints,
    recover_directory,
    remove_checkpoint,
    seal_checkpoint,
    verify,
)
from ..loop import Run, StopFlags
from ..rundir import checkpoints_dir
from ..settings import DEFAULT_WARNING_SIGNAL
from ._common import RunHolder

_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")  # the Trainer's checkpoint-N
_DELETING = re.compile(rf"^\.{PREFIX_CHECKPOINT_DIR}-\d+\.del-[0-9a-f]+$")  # `remove_checkpoint` cut short


def _trainer_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``checkpoint-N`` directory in `output_dir`, newest first, valid or not."""
    if not output_dir.is_dir():
        return []
    found = [(int(match[1]), output_dir / name) for name in os.listdir(output_dir)
             if (match := _CHECKPOINT.match(name)) and (output_dir / name).is_dir()]
    return sorted(found, reverse=True)


def _verified(path: Path, step: int | None) -> Manifest:
    """The manifest of `path` once every byte of every file is checked; CheckpointError otherwise."""
    manifest = verify(path, full=True)
    if manifest.kind != CheckpointKind.FULL.value:
        raise CheckpointError(f"checkpoint {path} holds only weights: nothing to resume training from")
    if step is not None and manifest.step != step:
        raise CheckpointError(f"checkpoint {path}: its manifest says step {manifest.step}")
    return manifest


def _delete(path: Path, why: str) -> None:
    try:
        remove_checkpoint(path)
    except OSError as error:
        warnings.warn(f"resilient: deleting {why} {path} failed: {error}", stacklevel=3)


def _set_aside(path: Path) -> Path:
    """Rename a checkpoint that failed verification out of the Trainer's way (its name no longer
    matches ``checkpoint-N``, so neither HF's resume nor its rotation sees it), never deleting it:
    it may be a sound checkpoint some other tool wrote without a manifest."""
    aside = path.with_name(f"{path.name}.unverified-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    path.rename(aside)
    return aside


def _commit_together(run: Run, path: Path, commit: Callable[[], None]) -> None:
    """Rank 0 runs `commit` once every rank has reached this point (their files written); a failure
    raises on every rank, so none trains on believing the checkpoint committed."""
    run.gather(None)
    failure = None
    if run.rank == 0:
        try:
            commit()
        except Exception as error:
            failure = error
    reason = run.share(None if failure is None else str(failure))
    if failure is not None:
        raise failure
    if reason is not None:
        raise CheckpointError(f"committing {path} failed on rank 0: {reason}")


class Resilient(TrainerCallback):
    """Add to a `Trainer` (`callbacks=[r]`) and train with `r.train(trainer)` to survive preemption and resume.

    Args:
        run: the `resilient.Run` a submitted job's function receives; None makes one from the
            other arguments (the run directory's lock, records and signals are then this
            callback's, and `train` ends the run when training ends or stops; so does any refusal
            below, so that a corrected second try in the same process finds the directory free).
        run_dir, warning_signal, max_requeues, max_crash_requeues: as for `resilient.Run`.

    Ranks must be started one process each (torchrun, srun, `resilient submit`); the Trainer's
    `output_dir` is where its checkpoints are, and resume looks there. Refused, with one line
    naming the fix: `enable_jit_checkpoint=True`, `save_only_model=True`, a Trainer of another
    world size, training started at another step than the newest valid checkpoint's.
    """

    def __init__(self, run: Run | None = None, *, run_dir: str | os.PathLike[str] | None = None,
                 warning_signal: str | int = DEFAULT_WARNING_SIGNAL, max_requeues: int | None = None,
                 max_crash_requeues: int = 0) -> None:
        self._holder = RunHolder("Resilient", run, run_dir=run_dir, warning_signal=warning_signal,
                                 max_requeues=max_requeues, max_crash_requeues=max_crash_requeues)
        self._run = self._holder.run
        self._output_dir: Path | None = None
        self._limit: int | None = None  # the user's save_total_limit, applied after each commit
        self._resume: tuple[str, int] | None = None  # (path, step) of the checkpoint to resume from
        self._stop: StopFlags | None = None
        self._save_started: float | None = None
        self.save_seconds: float | None = None  # how long the last save took (the deadline needs it)

    @property
    def run(self) -> Run:
        return self._run

    @property
    def resume_from(self) -> str | None:
        """The newest valid checkpoint, for `trainer.train(resume_from_checkpoint=...)`; None: start fresh."""
        if self._output_dir is None:
            raise self._holder.refuse(RuntimeError, (
                "Resilient.resume_from: no Trainer was made with this callback yet; pass it to "
                "Trainer(callbacks=[...]) first (trainer.add_callback is too late to find the checkpoint to resume from)"))
        return self._resume[0] if self._resume else None

    def train(self, trainer: Trainer, **kwargs: Any) -> TrainOutput:
        """`trainer.train(...)` resumed from the newest valid checkpoint; a run this callback owns ends
        with it: a stop requeues or exits (code 75) by the run's policy, a crash is recorded."""
        if "resume_from_checkpoint" in kwargs:
            raise self._holder.refuse(TypeError, ("Resilient.train() resumes from the newest valid checkpoint itself: "
                                                "do not pass resume_from_checkpoint"))
        if self not in trainer.callback_handler.callbacks:
            raise self._holder.refuse(ValueError, ("Resilient.train(trainer): the trainer was not made with this "
                                                 "callback; make it with Trainer(..., callbacks=[<this callback>])"))
        try:
            result = trainer.train(resume_from_checkpoint=self.resume_from, **kwargs)
        except BaseException as error:
            self._holder.end(error)
            raise
        self._holder.end(None)
        return result

    # -- the Trainer's hooks --------------------------------------------------------------

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        """The Trainer is made: check what would defeat the guarantees, take rotation over, find what to resume."""
        self._holder.check_open()
        if getattr(args, "enable_jit_checkpoint", False):
            raise self._holder.refuse(ValueError, (
                "TrainingArguments(enable_jit_checkpoint=True) saves from a SIGTERM handler on each rank alone, at no "
                "agreed step; Resilient checkpoints on SIGTERM itself: leave it False"))
        if args.save_only_model:
            raise self._holder.refuse(ValueError, (
                "TrainingArguments(save_only_model=True) writes no optimizer, scheduler or RNG state: such "
                "checkpoints cannot resume training; leave it False"))
        self._holder.refuse_foreign_launcher("the Trainer", args.world_size)
        self._output_dir = Path(args.output_dir)
        self._limit, args.save_total_limit = args.save_total_limit, None  # applied in `on_save`, after the commit
        self._resume = self._holder.agreed(self._find_resume)

    def _find_resume(self) -> tuple[str, int] | None:
        """Rank 0: the newest checkpoint-N whose every byte verifies; newer damaged ones are moved aside."""
        assert self._output_dir is not None
        if self._output_dir.is_dir():
            for name in os.listdir(self._output_dir):
                if _DELETING.match(name):
                    shutil.rmtree(self._output_dir / name, ignore_errors=True)
        for step, path in _trainer_checkpoints(self._output_dir):
            try:
                manifest = _verified(path, step)
            except CheckpointError as error:
                aside = _set_aside(path)
                warnings.warn(f"skipping checkpoint {path}: {error}; trying the next older one (moved aside to "
                              f"{aside.name}: training writes that step again)", stacklevel=2)
                continue
            if manifest.world_size != self._run.world_size:
                warnings.warn(f"resuming {manifest.world_size} ranks' checkpoint {path} on {self._run.world_size}: "
                              "the Trainer restores each rank's RNG state only on the same number of ranks",
                              stacklevel=2)
            return str(path), step
        return None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._run.take_back_signals()  # in case a handler was installed since the Run made ours
        expected = self._resume[1] if self._resume else 0
        if state.global_step != expected:
            found = f"the newest valid checkpoint is {self._resume[0]}" if self._resume else "there is no valid checkpoint"
            raise self._holder.refuse(RuntimeError, (
                f"the Trainer starts at step {state.global_step} but {found}: train with Resilient.train(trainer), "
                "which resumes from it, or pass trainer.train(resume_from_checkpoint=<the callback>.resume_from)"))
        if self._resume:
            self._run.record_resume(self._resume[0])

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        """After each optimizer step, every rank: whether to stop; on a stop the Trainer saves at this step."""
        stop = self._run.agree_on_stop(state.global_step, save_seconds=self.save_seconds)
        if stop is not None:
            self._stop = stop
            control.should_save = True
        if control.should_save:
            self._save_started = time.monotonic()

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        """The Trainer wrote checkpoint-N (every rank its part): commit it, rotate, and leave on a stop."""
        assert self._output_dir is not None
        path = self._output_dir / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        stop, self._stop = self._stop, None
        origin = CheckpointOrigin.EMERGENCY if stop is not None else CheckpointOrigin.HUGGINGFACE

        def commit() -> None:
            seal_checkpoint(path, step=state.global_step, epoch=int(state.epoch or 0),
                            world_size=self._run.world_size, rule=origin.value)
            self._rotate(state, keep=path)

        _commit_together(self._run, path, commit)  # after every rank wrote its rng_state_{rank}.pth
        seconds = None  # unknown for a save the Trainer decided after the step (at an epoch's end)
        if self._save_started is not None:
            seconds = self.save_seconds = time.monotonic() - self._save_started
            self._save_started = None
        self._run.record_checkpoint(path, seconds=seconds)
        if stop is not None:
            self._run.stopped(stop, path)

    def _rotate(self, state: TrainerState, keep: Path) -> None:
        """`save_total_limit` counting committed checkpoints only; the best and the resumed-from one stay."""
        if not self._limit or self._limit <= 0:
            return
        assert self._output_dir is not None
        spared = {os.path.realpath(p) for p in (keep, state.best_model_checkpoint,
                                                self._resume[0] if self._resume else None) if p}
        valid = 0
        for _, path in _trainer_checkpoints(self._output_dir):
            if os.path.realpath(path) == os.path.realpath(keep) or valid < self._limit and self._committed(path):
                valid += 1
            elif os.path.realpath(path) not in spared:
                _delete(path, "the older checkpoint")

    @staticmethod
    def _committed(path: Path) -> bool:
        try:
            verify(path)  # manifest and sizes: what a kill or a full disk leaves wrong
            return True
        except CheckpointError:
            return False


class AcceleratorCheckpoints:
    """Atomic `save_state`/`load_state` and the per-step stop agreement for a plain Accelerate loop.

    ::

        with resilient.Run(checkpoint=[]) as run:       # or the Run a @resilient.job function gets
            accelerator = Accelerator()
            model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
            checkpoints = AcceleratorCheckpoints(accelerator, run)
            step = checkpoints.resume()                 # 0, or the step of the checkpoint loaded
            for batch in accelerator.skip_first_batches(loader, step % len(loader)): ...
                ...; optimizer.step(); step += 1
                checkpoints.step(step)                  # on an agreed stop: saves, then leaves
                if step % 100 == 0: checkpoints.save(step)

    Checkpoints are ``<directory>/step=N.ckpt``: Accelerate's own files written into a temporary
    directory beside it, sealed with a manifest and renamed into place. `keep`: how many of the
    newest to keep (the one resumed from is never deleted). Accelerate loads the RNG states it
    saved with pickle: resume only from checkpoints you wrote.

    Bitwise resume mid-epoch (tested) needs what Accelerate leaves to the loop: a seedable sampler
    (`DataLoaderConfiguration(use_seedable_sampler=True)`, `loader.set_epoch(epoch)`), and a
    DataLoader with a generator of its own (`generator=torch.Generator()`): otherwise the resumed
    epoch's new iterator draws its seed from the global RNG that `load_state` just restored, and
    dropout after the resume sees other random numbers than the uninterrupted run did.
    """

    def __init__(self, accelerator: Accelerator, run: Run, *, directory: str | os.PathLike[str] | None = None,
                 keep: int = 2) -> None:
        if not isinstance(accelerator, Accelerator):
            raise TypeError(f"AcceleratorCheckpoints(accelerator): an accelerate.Accelerator, not "
                            f"{type(accelerator).__name__}")
        if not isinstance(run, Run):
            raise TypeError(f"AcceleratorCheckpoints(run): a resilient.Run, not {type(run).__name__}")
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"AcceleratorCheckpoints(keep={keep!r}): keep must be an int >= 1")
        if accelerator.num_processes != run.world_size:
            raise RuntimeError(f"the Accelerator runs {accelerator.num_processes} processes but resilient set up "
                               f"{run.world_size}: start one process per rank")
        self._accelerator, self._run, self._keep = accelerator, run, keep
        self._holder = RunHolder("AcceleratorCheckpoints", run)
        self.directory = Path(directory) if directory is not None else checkpoints_dir(run.run_dir)
        self.resumed_from: str | None = None
        self.save_seconds: float | None = None

    def resume(self) -> int:
        """Load the newest checkpoint that verifies (older ones after a warning); its step, or 0 for none."""
        found = self._holder.agreed(self._newest_valid)
        if found is None:
            return 0
        path, step = found
        self._accelerator.load_state(path)
        self.resumed_from = path
        self._run.record_resume(path)
        return step

    def _newest_valid(self) -> tuple[str, int] | None:
        recover_directory(self.directory)
        for path, manifest in newest_checkpoints([self.directory]):
            try:
                _verified(path, None)
            except CheckpointError as error:
                warnings.warn(f"skipping checkpoint {path}: {error}; trying the next older one", stacklevel=2)
                continue
            return str(path), manifest.step
        return None

    def step(self, step: int) -> None:
        """Every rank, after each optimizer step: on an agreed stop, save here and leave the loop."""
        stop = self._run.agree_on_stop(step, save_seconds=self.save_seconds)
        if stop is not None:
            self._run.stopped(stop, self.save(step, origin=CheckpointOrigin.EMERGENCY))

    def save(self, step: int, *, origin: CheckpointOrigin = CheckpointOrigin.ACCELERATE) -> Path:
        """Every rank: `accelerator.save_state` committed atomically as ``step=N.ckpt``; older ones pruned."""
        started = time.monotonic()
        final = self.directory / f"step={step}{CHECKPOINT_SUFFIX}"
        temp = self._holder.agreed(lambda: str(make_temporary(final)))
        self._accelerator.save_state(temp)

        def commit() -> None:
            try:
                seal_checkpoint(Path(temp), step=step, epoch=0, world_size=self._run.world_size,
                                rule=origin.value, commit_as=final)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            self._prune(final)

        _commit_together(self._run, final, commit)
        self.save_seconds = time.monotonic() - started
        self._run.record_checkpoint(final, seconds=self.save_seconds)
        return final

    def _prune(self, keep: Path) -> None:
        spared = {os.path.realpath(p) for p in (keep, self.resumed_from) if p}
        for index, (path, _) in enumerate(newest_checkpoints([self.directory])):
            if index >= self._keep and os.path.realpath(path) not in spared:
                _delete(path, "the older checkpoint")


__all__ = ["AcceleratorCheckpoints", "Resilient"]
