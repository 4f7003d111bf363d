"""Lightning's `Trainer` with resilient's preemption handling, atomic checkpoints and resume.

Lightning drives its own fit loop, so `Run.batches()` cannot mark the step boundaries; this
module puts the same machinery behind Lightning's public extension points instead:

- `Resilient`, a callback, owns (or is given) a `Run`: the run directory's lock and records, the
  stop signals, the per-step agreement across ranks, the requeue policy. After every optimizer
  step (`on_train_batch_end`) every rank asks the Run whether to stop; on a stop every rank
  calls `trainer.save_checkpoint` into the run's emergency directory and the Run requeues or
  exits. Lightning installs its own SIGTERM handler (and, with `SLURMEnvironment(auto_requeue=True)`,
  one that saves and requeues inside the handler) as training starts: the callback takes the
  signals back at `on_train_start`, so one handler answers, and it only records.
- `AtomicCheckpointIO`, a `CheckpointIO` plugin, writes every `.ckpt` Lightning saves (the
  emergency one, `ModelCheckpoint`'s, `trainer.save_checkpoint`'s) as resilient's checkpoint
  directory: written under a temporary name, fsynced, renamed, with a checksummed manifest; and
  loads only what verifies.
- Resume needs no `ckpt_path`: `Resilient` is an `OnExceptionCheckpoint` (without its save on
  exception), and for such a callback Lightning's `fit(ckpt_path=None)` resumes from its
  `ckpt_path` ("last"), which here is the newest valid checkpoint of the run's directories.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

try:
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
    from lightning.pytorch.plugins import CheckpointIO
except ModuleNotFoundError as missing:  # the optional extra is not installed
    raise ImportError(f"resilient.integrations.lightning needs Lightning ({missing}): "
                      "pip install 'resilient[lightning]'") from None

from ..checkpoint import (
    CHECKPOINT_SUFFIX,
    CheckpointError,
    CheckpointKind,
    CheckpointOrigin,
    UntrustedCheckpointError,
    find_checkpoints,
    load_files,
    newest_checkpoints,
    recover_directory,
    remove_checkpoint,
    write_checkpoint,
)
from ..loop import Run, capture_rng, restore_rng
from ..rundir import checkpoints_dir
from ..settings import DEFAULT_WARNING_SIGNAL
from ._common import RunHolder

PAYLOAD = "lightning.pt"  # the one payload file: Lightning's checkpoint dict, as torch.save writes it

# What Lightning says at every `fit(ckpt_path=None)` with an OnExceptionCheckpoint, and at a fresh
# start: both describe its own "last" lookup, which `Resilient` replaces, so they would mislead.
_LIGHTNING_NOTES = (r"`\.fit\(ckpt_path=None\)` was called without a model",
                    r"\.fit\(ckpt_path=\"last\"\) is set, but there is no last checkpoint available")


class AtomicCheckpointIO(CheckpointIO):
    """Writes each Lightning checkpoint atomically with a checksummed manifest; loads only verified ones.

    A `.ckpt` path becomes a directory holding Lightning's checkpoint dict and MANIFEST.json, so a
    save interrupted at any instant (SIGKILL, a full disk) leaves nothing that looks like a
    checkpoint, and a damaged one is refused instead of loaded.

    Args:
        weights_only: load with `torch.load(weights_only=True)` unless Lightning's `fit(weights_only=...)`
            says otherwise; set False only for checkpoints you trust that hold arbitrary objects
            (`save_hyperparameters()` of non-tensor values, say).
    """

    def __init__(self, *, weights_only: bool = True) -> None:
        if not isinstance(weights_only, bool):
            raise TypeError(f"AtomicCheckpointIO(): weights_only must be True or False, not {weights_only!r}")
        self.weights_only = weights_only
        self.run: Run | None = None  # set by `Resilient`: the job's ranks, emergency directory and events
        self.save_seconds: float | None = None  # how long the last save took (the deadline needs it)
        self.resume_candidates: list[str] | None = None  # set while Lightning resumes through `Resilient`
        self.resumed_from: str | None = None  # the candidate that loaded

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any | None = None) -> None:
        """Commit `checkpoint` as the checkpoint directory `path` (Lightning calls it on rank 0)."""
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint: storage_options are not supported; "
                            f"got {storage_options!r}")
        target = Path(path)
        if not target.name.endswith(CHECKPOINT_SUFFIX):
            raise ValueError(f"save_checkpoint({os.fspath(path)!r}): a checkpoint path must end in "
                             f"{CHECKPOINT_SUFFIX!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        emergency = self.run is not None and target.parent.resolve() == self.run.emergency_dir.resolve()
        origin = CheckpointOrigin.EMERGENCY if emergency else CheckpointOrigin.LIGHTNING
        # Lightning leaves the optimizers out of a weights-only save: nothing to resume training from.
        kind = CheckpointKind.FULL if "optimizer_states" in checkpoint else CheckpointKind.WEIGHTS
        started = time.monotonic()
        write_checkpoint([(target, origin.value)], {PAYLOAD: checkpoint}, step=int(checkpoint.get("global_step", 0)),
                         epoch=int(checkpoint.get("epoch", 0)), metrics={},
                         world_size=self.run.world_size if self.run is not None else 1, kind=kind.value)
        seconds = time.monotonic() - started
        if kind is CheckpointKind.FULL:
            self.save_seconds = seconds
        if self.run is not None:
            self.run.record_checkpoint(target, seconds=seconds)

    def load_checkpoint(self, path: str | os.PathLike[str], map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's checkpoint dict from `path`, every byte checked against the manifest first.

        While `Resilient` resumes, whichever of the run's checkpoints Lightning picked (it goes
        by modification time), the newest valid one is loaded, falling back to the next older
        one, with a warning, when a checkpoint turns out damaged.
        """
        safe = self.weights_only if weights_only is None else weights_only
        candidates, self.resume_candidates = self.resume_candidates, None
        if candidates is None:
            return self._load(Path(path), map_location, safe)
        for candidate in candidates:
            try:
                loaded = self._load(Path(candidate), map_location, safe)
            except UntrustedCheckpointError:
                raise
            except CheckpointError as error:
                warnings.warn(f"skipping checkpoint {candidate}: {error}; trying the next older one", stacklevel=2)
                continue
            self.resumed_from = candidate
            return loaded
        raise CheckpointError(f"no valid checkpoint to resume from among {', '.join(candidates)}")

    @staticmethod
    def _load(path: Path, map_location: Any | None, weights_only: bool) -> dict[str, Any]:
        loaded = load_files(path, [PAYLOAD], weights_only=weights_only,
                            map_location=map_location if map_location is not None else "cpu")[PAYLOAD]
        if not isinstance(loaded, dict):
            raise CheckpointError(f"checkpoint {path}: {PAYLOAD} holds no Lightning checkpoint")
        return loaded

    def remove_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Delete a checkpoint as `ModelCheckpoint` evicts it: renamed away first, never half there."""
        if os.path.lexists(path):
            remove_checkpoint(Path(path))


class Resilient(OnExceptionCheckpoint):
    """Add to a `Trainer` (`callbacks=[..., r]`, `plugins=r.plugins`) to survive preemption and resume.

    Args:
        run: the `resilient.Run` a submitted job's function receives; None makes one from the
            other arguments (the run directory's lock, records and signals are then this
            callback's, and it ends the run when `fit` ends).
        run_dir, warning_signal, max_requeues, max_crash_requeues: as for `resilient.Run`.
        checkpoint_dirs: more directories to resume from (a `ModelCheckpoint`'s `dirpath`
            outside `<run_dir>/checkpoints`); the emergency directory and `<run_dir>/checkpoints`
            are always searched.
        weights_only: load checkpoints with `torch.load(weights_only=True)` (see `AtomicCheckpointIO`).

    Ranks must be started one process each (torchrun, srun, `resilient submit`), not by
    Lightning's own launcher from one process: the Run joins them before `fit`.
    """

    def __init__(self, run: Run | None = None, *, run_dir: str | os.PathLike[str] | None = None,
                 warning_signal: str | int = DEFAULT_WARNING_SIGNAL, max_requeues: int | None = None,
                 max_crash_requeues: int = 0, checkpoint_dirs: Iterable[str | os.PathLike[str]] = (),
                 weights_only: bool = True) -> None:
        if isinstance(checkpoint_dirs, (str, os.PathLike)):
            raise TypeError("Resilient(): checkpoint_dirs must be a list of directories, not one path")
        self.checkpoint_io = AtomicCheckpointIO(weights_only=weights_only)
        self._holder = RunHolder("Resilient", run, run_dir=run_dir, warning_signal=warning_signal,
                                 max_requeues=max_requeues, max_crash_requeues=max_crash_requeues,
                                 weights_only=weights_only)
        self._run = self._holder.run
        super().__init__(dirpath=self._run.emergency_dir, filename="resume")
        self._dirs = [self._run.emergency_dir, checkpoints_dir(self._run.run_dir),
                      *(Path(directory) for directory in checkpoint_dirs)]
        self.checkpoint_io.run = self._run
        self._last_step: int | None = None
        self._resumed_from: str | None = None
        self._pending_rng: dict[str, Any] | None = None  # this rank's generators, put back at the first step
        for note in _LIGHTNING_NOTES:
            warnings.filterwarnings("ignore", message=note)

    @property
    def run(self) -> Run:
        return self._run

    @property
    def plugins(self) -> list[Any]:
        """For `Trainer(plugins=...)`: the atomic CheckpointIO, and on SLURM Lightning's SLURM
        environment with its auto-requeue off (resilient requeues, after the checkpoint)."""
        plugins: list[Any] = [self.checkpoint_io]
        if SLURMEnvironment.detect():
            plugins.append(SLURMEnvironment(auto_requeue=False))
        return plugins

    @property
    def resumed_from(self) -> str | None:
        """The checkpoint this start resumed from (known once training has started), None for a fresh start."""
        return self._resumed_from

    @property
    def ckpt_path(self) -> str | None:  # type: ignore[override]
        """The newest valid checkpoint of the run, which `fit(ckpt_path=None)` resumes from.

        Lightning reads it on every rank at the start of `fit`: rank 0 tidies the directories
        (leftovers of interrupted writes) and lists the valid full checkpoints newest first,
        and every rank gets its list, so all resume from the same one.
        """
        self._holder.refuse_foreign_launcher("Lightning")
        candidates = self._holder.agreed(self._valid_full_checkpoints)
        self.checkpoint_io.resume_candidates = candidates or None
        self.checkpoint_io.resumed_from = None
        return candidates[0] if candidates else None

    def _valid_full_checkpoints(self) -> list[str]:
        """Rank 0: the directories tidied (leftovers of interrupted writes), then their valid full checkpoints."""
        for directory in self._dirs:
            recover_directory(directory)
        return [str(path) for path, manifest in newest_checkpoints(self._dirs) if manifest.kind == CheckpointKind.FULL]

    # -- Lightning's hooks ----------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._holder.check_open()
        if trainer.world_size != self._run.world_size:
            raise RuntimeError(f"the Trainer runs {trainer.world_size} ranks but the job has {self._run.world_size}: "
                               "set devices and num_nodes to the processes the job starts")
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            raise ValueError("SLURMEnvironment(auto_requeue=True) would requeue from inside Lightning's signal "
                             "handler, before every rank has checkpointed: use plugins=Resilient(...).plugins, "
                             "which passes SLURMEnvironment(auto_requeue=False)")
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and not self._searched(callback.dirpath):
                warnings.warn(f"ModelCheckpoint(dirpath={callback.dirpath!r}) writes outside {self._dirs[1]}: a "
                              "requeued job does not resume from its checkpoints; give it dirpath inside the run "
                              "directory's checkpoints/ or list it in Resilient(checkpoint_dirs=...)", stacklevel=2)

    def _searched(self, dirpath: str | os.PathLike[str] | None) -> bool:
        return dirpath is not None and any(Path(dirpath).resolve() == d.resolve() for d in self._dirs)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning has just installed its own handlers (`register_signal_handlers`): ours answer again.
        self._run.take_back_signals()
        self._last_step = trainer.global_step
        self._resumed_from = self.checkpoint_io.resumed_from  # the one that loaded (a damaged newer one skipped)
        if self._resumed_from is not None:
            self._run.record_resume(self._resumed_from)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """The first step after a resume draws its random numbers (dropout) from where the saved step left them."""
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """The batch boundary: after an optimizer step, every rank agrees whether to stop, and on a
        stop saves Lightning's whole state there and leaves `fit` for the requeue."""
        step = trainer.global_step
        if step == self._last_step:  # gradients still accumulating: no optimizer step to stop after
            return
        self._last_step = step
        stop = self._run.agree_on_stop(step, save_seconds=self.checkpoint_io.save_seconds)
        if stop is None:
            return
        emergency = self._run.emergency_dir / f"step={step}{CHECKPOINT_SUFFIX}"
        trainer.save_checkpoint(emergency)  # every rank takes part; rank 0 writes, and all wait for it
        if self._run.rank == 0:
            self._remove_older_emergency(keep=emergency)
        self._run.stopped(stop, emergency)

    def _remove_older_emergency(self, keep: Path) -> None:
        """One emergency checkpoint is enough once the next is committed (not the one resumed from)."""
        spared = {os.path.realpath(path) for path in (keep, self.resumed_from) if path is not None}
        for path, _ in find_checkpoints([self._run.emergency_dir]):
            if os.path.realpath(path) not in spared:
                try:
                    remove_checkpoint(path)
                except OSError as error:
                    warnings.warn(f"resilient: deleting the older emergency checkpoint {path} failed: {error}",
                                  stacklevel=2)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """No save here (OnExceptionCheckpoint's): a stop has saved already, a crash's state is suspect.
        A run this callback owns ends as the exception says: requeued, stopped or failed."""
        self._holder.end(exception)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """`fit` returned: a run this callback owns is complete. (Nothing is deleted, unlike OnExceptionCheckpoint.)"""
        if stage == "fit":
            self._holder.end(None)

    def state_dict(self) -> dict[str, Any]:
        """Every rank's random generators, in rank order, gathered into rank 0's checkpoint (Lightning's
        own holds none). Lightning asks every callback on every rank as it builds a full checkpoint, so
        every rank takes part; the states are those after the step just done, which the next one draws from."""
        states = self._run.gather(capture_rng())
        return {"rng": states} if states is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep this rank's generators until the first step (on as many ranks as saved them; otherwise a warning)."""
        states = state_dict.get("rng")
        if not states:
            return
        if len(states) != self._run.world_size:
            warnings.warn(f"the checkpoint holds the random generators of {len(states)} ranks, not "
                          f"{self._run.world_size}: they are not restored, and random draws after the resume "
                          "differ from an uninterrupted run's", stacklevel=2)
            return
        self._pending_rng = states[self._run.rank]

    @property
    def state_key(self) -> str:
        return "resilient.Resilient"


__all__ = ["AtomicCheckpointIO", "Resilient"]
