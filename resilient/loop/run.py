"""`Run`: the training-loop helper that checkpoints by the rules and resumes bit for bit.

The loop's step boundary (the moment `batches()` is asked for the next batch) is the one place
where checkpoints are taken: the optimizer step is complete, no batch is half-consumed, and every
rank is at the same step. Saving there, and restoring the RNG states at the matching point of
the resumed loop, is what makes an interrupted run end with the same weights as one that never
stopped.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..checkpoint import (
    CHECKPOINT_SUFFIX,
    CheckpointError,
    Manifest,
    find_checkpoints,
    link_checkpoint,
    recover_directory,
    remove_checkpoint,
)
from ..coordination._agreement import StepAgreement
from ..coordination._deadline import Deadline
from ..coordination._dist import DistInfo, broadcast_object, init_distributed, shutdown
from ..coordination._signals import SignalRecorder, signal_number
from ..requeue import _conclude
from ..requeue._host import CTRL_C, Host, detect_host
from ..requeue._policy import RequeuePolicy
from ..rules import ModelCheckpoint, check_rule_set
from ..rundir import (
    Event,
    RunDirInUse,
    RunLock,
    State,
    append_event,
    checkpoints_dir,
    emergency_dir,
    read_status,
)
from ._position import LoaderPosition
from ._resume import Restored, restore_latest
from ._rng import capture_rng, restore_rng
from ._saving import OnSaveError, Snapshot, write_together
from ._state import check_trackable, restore_objects
from ._workers import prepare_workers

T = TypeVar("T")

RUN_DIR_ENV = "RESILIENT_RUN_DIR"
_AUTOMATIC_METRICS = ("epoch", "step")
# The stop flags, the first entries of every agreement, as events.jsonl names them (the first
# is the warning signal, named by the signal Run was given).
_STOP_FLAGS = ("warning", "SIGTERM", "SIGINT", "deadline")
_DEADLINE = _STOP_FLAGS.index("deadline")
DEADLINE_MARGIN_S = 20.0


class _Interrupted(BaseException):
    """Raised at the agreed step boundary after the emergency checkpoint is committed.

    A BaseException, like KeyboardInterrupt, so that a training loop's `except Exception` does
    not swallow it on its way to `Run.__exit__`, which requeues or exits.
    """

    def __init__(self, flags: list[int], checkpoint: str) -> None:
        super().__init__(f"stopped at a step boundary; emergency checkpoint {checkpoint}")
        self.flags = flags
        self.checkpoint = checkpoint


def _rules_from(checkpoint: ModelCheckpoint | Sequence[ModelCheckpoint] | None) -> list[ModelCheckpoint]:
    if checkpoint is None:
        return [ModelCheckpoint()]  # Lightning's default: every epoch, keep the latest
    rules = [checkpoint] if isinstance(checkpoint, ModelCheckpoint) else checkpoint
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
        raise TypeError(f"checkpoint must be a ModelCheckpoint or a list of them, not {type(checkpoint).__name__}")
    for index, rule in enumerate(rules):
        if not isinstance(rule, ModelCheckpoint):
            raise TypeError(f"checkpoint[{index}] must be a ModelCheckpoint, not {type(rule).__name__}")
    return list(rules)


def _rule_record(rule: ModelCheckpoint) -> dict[str, Any]:
    """A rule as events.jsonl shows it: what it saves by, as plain JSON."""
    interval = rule.train_time_interval
    return {
        "kind": type(rule).__name__,
        "monitor": rule.monitor,
        "mode": rule.mode,
        "save_top_k": rule.save_top_k,
        "every_n_train_steps": rule.every_n_train_steps or None,
        "every_n_epochs": rule.every_n_epochs or None,
        "train_time_interval_s": interval.total_seconds() if interval is not None else None,
        "filename": rule.filename,
        "dirpath": rule.dirpath,
    }


def _run_dir_from(run_dir: str | os.PathLike[str] | None) -> Path:
    if run_dir is None:
        run_dir = os.environ.get(RUN_DIR_ENV) or os.getcwd()
    if not isinstance(run_dir, (str, os.PathLike)) or str(run_dir) == "":
        raise TypeError(f"run_dir must be a path, not {run_dir!r}")
    path = Path(run_dir).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"run_dir {str(path)!r} exists and is not a directory")
    return path


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


class Run:
    """A training run that checkpoints by its rules and resumes from its latest valid checkpoint.

    Use it as a context manager (or receive it in a `@resilient.job` function)::

        with resilient.Run(checkpoint=ModelCheckpoint(every_n_train_steps=100)) as run:
            run.track(model=model, optimizer=opt)          # restores if a checkpoint exists
            for epoch in run.epochs(10):                   # starts at the restored epoch
                for batch in run.batches(loader):          # resumes mid-epoch
                    ...
                run.log("val_loss", val_loss)

    Args:
        checkpoint: one `ModelCheckpoint` or a list; None gives Lightning's default (save every
            epoch, keep the latest); an empty list disables rule-based checkpoints.
        run_dir: where checkpoints go when a rule has no `dirpath` (`<run_dir>/checkpoints`);
            defaults to `$RESILIENT_RUN_DIR`, else the current directory.
        resume: restore from the latest valid checkpoint at `track()` (default); False starts fresh.
        weights_only: load checkpoints with `torch.load(weights_only=True)` (safe for files you did
            not write); set False only for trusted checkpoints holding arbitrary Python objects.
        backend: torch.distributed backend when the environment asks for several ranks
            (default: nccl with CUDA, else gloo).
        clock: monotonic seconds for `train_time_interval` (injectable for tests).
        warning_signal: the signal the cluster sends before a time limit or preemption (SLURM's
            `--signal`); SIGTERM is always caught too. On either, every rank checkpoints at the
            same step boundary and the job requeues (SLURM, local executor) or exits with
            code 75 (a plain process: start it again to resume).
        max_requeues: how often the job may requeue after preemption or time limits (None: no bound).
        max_crash_requeues: how often after an exception in the training code (default 0: fail).
        on_save_error: what a failed periodic save (a full disk, a quota, an I/O error) does:
            "stop" (default) ends the run as failed, naming the cause, so that no more work is
            done that could not be saved; "continue" warns, records a `checkpoint_failed`
            event and trains on, trying again at the next save a rule schedules (the rules'
            bookkeeping forgets the failed save; time intervals restart from it). Either way
            the checkpoints already committed stay as they were. A failed emergency
            checkpoint always ends the run.

    Ctrl-C stops at the next step boundary with a checkpoint (state `stopped`, exit code 130, no
    requeue); a second Ctrl-C stops at once, without one.
    """

    def __init__(
        self,
        checkpoint: ModelCheckpoint | Sequence[ModelCheckpoint] | None = None,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        resume: bool = True,
        weights_only: bool = True,
        backend: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        warning_signal: str | int = "USR2",
        max_requeues: int | None = None,
        max_crash_requeues: int = 0,
        on_save_error: str | OnSaveError = "stop",
    ) -> None:
        self._rules = _rules_from(checkpoint)
        self._run_dir = _run_dir_from(run_dir)
        self._emergency_dir = emergency_dir(self._run_dir)
        check_rule_set(self._rules, default_dirpath=checkpoints_dir(self._run_dir), emergency_dir=self._emergency_dir)
        self._resume = _check_flag("resume", resume)
        self._weights_only = _check_flag("weights_only", weights_only)
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"backend must be a string such as 'gloo' or 'nccl', not {backend!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, not {clock!r}")
        self._warning_signal = signal_number(warning_signal, name="warning_signal")
        self._policy = RequeuePolicy(max_requeues, max_crash_requeues)
        self._on_save_error = OnSaveError.parse(on_save_error)
        for rule in self._rules:
            rule._bind(checkpoints_dir(self._run_dir), clock)
        self._time_rules = [rule for rule in self._rules if rule.train_time_interval is not None]
        self._dist: DistInfo = init_distributed(backend)
        self._host: Host = detect_host()
        self._closed = False
        self._stop_signals = (self._warning_signal, signal.SIGTERM, signal.SIGINT)  # the first stop flags
        self._signals = SignalRecorder(self._stop_signals)
        self._stop_reasons = (signal.Signals(self._warning_signal).name, *_STOP_FLAGS[1:])
        self._agreement = StepAgreement(self._dist, width=len(_STOP_FLAGS) + len(self._time_rules))
        self._deadline = Deadline(self._host.end_time() if self._dist.rank == 0 else None, margin_s=DEADLINE_MARGIN_S)
        self._last_boundary = time.monotonic()
        self._save_seconds: float | None = None
        self._fire_drill_at: int | None = None  # set by a submitted job whose file asks for a drill
        self._tracked: dict[str, Any] = {}
        self._restored: Restored | None = None
        self._looked_for_checkpoint = False
        self._pending_rng: dict[str, Any] | None = None
        self._epoch_rng: dict[str, Any] | None = None
        self._metrics: dict[str, Any] = {}
        self._step = 0
        self._epoch = 0
        self._batch = 0
        self._loop_started = False
        self._in_batches = False
        self._batches_done_in_epoch = False
        self._train_end_saved_epoch: int | None = None
        self._lock = RunLock(self._run_dir)
        refusal, self._completed_before = broadcast_object(self._begin() if self._dist.rank == 0 else None, self._dist)
        if refusal is not None:
            self.close()
            if isinstance(refusal, RunDirInUse):
                raise refusal
            _conclude.announce(refusal)
            raise SystemExit(refusal.exit_code)
        try:
            self._signals.install()
        except BaseException as error:  # the start is recorded: so must be its end
            self.__exit__(type(error), error, None)
            raise

    def _begin(self) -> tuple[_conclude.Outcome | RunDirInUse | None, bool]:
        """Rank 0 takes the run directory and records the start: a refusal that stops every rank,
        and whether the run's previous start had completed it."""
        try:
            self._lock.acquire(self._host.job_id)
        except RunDirInUse as error:
            return error, False
        completed = read_status(self._run_dir).state == State.COMPLETED
        return _conclude.begin(self._run_dir, self._host), completed

    # -- public surface -------------------------------------------------------------------

    @property
    def step(self) -> int:
        """Optimizer steps (batches) completed since the run began, across restarts."""
        return self._step

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 0."""
        return self._epoch

    @property
    def rank(self) -> int:
        return self._dist.rank

    @property
    def world_size(self) -> int:
        return self._dist.world_size

    @property
    def run_dir(self) -> Path:
        return self._run_dir

    @property
    def completed_before(self) -> bool:
        """Whether this run directory's previous start ran to completion (a job called again)."""
        return self._completed_before

    @property
    def resumed_from(self) -> str | None:
        """The checkpoint this run restored from, or None for a fresh start."""
        return str(self._restored.path) if self._restored else None

    @property
    def checkpoint_dirs(self) -> list[Path]:
        """Every directory searched for a checkpoint to resume from: the rules' and the emergency one."""
        dirs = {Path(rule.dirpath) for rule in self._rules if rule.dirpath}
        dirs.add(self._emergency_dir)
        return sorted(dirs)

    def track(self, **objects: Any) -> None:
        """Register objects to checkpoint; restores them from the latest valid checkpoint if any.

        Anything with `state_dict()`/`load_state_dict()` can be tracked. Modules, optimizers,
        schedulers and gradient scalers are treated as replicated across ranks and written once;
        everything else is kept per rank.
        """
        if self._loop_started:
            raise RuntimeError("track() must be called before the training loop starts")
        if not objects:
            raise TypeError("track() needs at least one object, e.g. run.track(model=model, optimizer=opt)")
        for name, obj in objects.items():
            check_trackable(name, obj)
            if name in self._tracked:
                raise ValueError(f"track(): {name!r} is already tracked")
        self._tracked.update(objects)
        if not self._looked_for_checkpoint:
            self._looked_for_checkpoint = True
            self._find_and_restore_run_state()
        if self._restored is not None:
            state, own = self._restored.state, self._restored.own
            restore_objects(objects, state["objects"], own["objects"], str(self._restored.path))

    def epochs(self, n: int) -> Iterator[int]:
        """Yield epoch numbers from the restored epoch up to `n - 1`; epoch rules fire after each."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"epochs(n): n must be an int, not {n!r}")
        if n < 0:
            raise ValueError(f"epochs(n): n must be >= 0, not {n}")
        if not self._loop_started and self._restored is not None and self._epoch >= n and self._dist.rank == 0:
            print(f"resilient: nothing left to train: resumed at epoch {self._epoch}, step {self._step} from "
                  f"{self._restored.path}, and epochs({n}) ends before it; use a new run_dir to train again",
                  file=sys.stderr, flush=True)
        self._loop_started = True
        return self._epochs(n)

    def _epochs(self, n: int) -> Iterator[int]:
        while self._epoch < n:
            self._restore_rng_at_epoch_start()
            yield self._epoch
            if not self._batches_done_in_epoch:
                self._fire_epoch_rules(on_train_end=True)
            stop, _ = self._agree(time_rules=False)
            self._fire_epoch_rules(on_train_end=False, stop=stop)
            self._epoch += 1
            self._batch = 0
            self._batches_done_in_epoch = False

    def batches(self, loader: Iterable[T]) -> Iterator[T]:
        """Yield the epoch's batches, from where a restored run left off.

        Each request for the next batch is a step boundary: the step counter advances and the
        checkpoint rules are checked before anything more is read from the loader.
        """
        if not isinstance(loader, Iterable):
            raise TypeError(f"batches(loader): loader must be iterable, not {type(loader).__name__}")
        if self._in_batches:
            raise RuntimeError("batches() is already running; use one run.batches() loop per epoch")
        self._loop_started = True
        return self._batches(loader)

    def log(self, name: str, value: float | torch.Tensor) -> None:
        """Record a metric for the checkpoint rules (`monitor`, filename templates).

        Tensors are kept as they are and read only when a rule needs the value, so logging every
        step costs no device synchronisation.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"log(): name must be a non-empty string, not {name!r}")
        if name in _AUTOMATIC_METRICS:
            raise ValueError(f"log(): {name!r} is provided automatically; log it under another name")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"log({name!r}): a tensor metric must hold one value, not shape {tuple(value.shape)}")
            value = value.detach()
        elif isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise TypeError(f"log({name!r}): value must be a number or a one-element tensor, not {value!r}")
        self._metrics[name] = value

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write a full, resumable checkpoint to `path` (a `.ckpt` directory); every rank must call.

        Like Lightning's `trainer.save_checkpoint`: all ranks take part, rank 0 writes.
        """
        if not isinstance(path, (str, os.PathLike)) or str(path) == "":
            raise TypeError(f"save_checkpoint(path): path must be a file system path, not {path!r}")
        if not str(path).endswith(CHECKPOINT_SUFFIX):
            raise ValueError(f"save_checkpoint(path): a checkpoint is a directory named *{CHECKPOINT_SUFFIX}, not {str(path)!r}")
        self._write(self._snapshot, [(Path(path).absolute(), "manual")])

    def close(self, *, together: bool = True) -> None:
        """Give the signals back and leave the process group if this run created it.

        `together=False` when this rank alone is leaving (it crashed): no collective then.
        """
        if not self._closed:
            self._closed = True
            self._signals.uninstall()
            if together:
                self._agreement.close()
            shutdown(self._dist, together=together)
            self._lock.release()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        """Record how the run ended; after an interruption or a crash, requeue or exit as the policy says.

        Every way out records a final state and an end event: a finished loop, a stop, an
        exception, Ctrl-C, `sys.exit()`.
        """
        try:
            outcome = self._conclude(error)
        finally:
            self.close(together=error is None or isinstance(error, _Interrupted))
        if outcome is not None:
            if self._dist.rank == 0 or not isinstance(error, _Interrupted):
                _conclude.announce(outcome)
            raise SystemExit(outcome.exit_code) from None

    def _conclude(self, error: BaseException | None) -> _conclude.Outcome | None:
        rank0 = self._dist.rank == 0
        if isinstance(error, _Interrupted):
            outcome = None
            if rank0:
                received = {sig for sig, flag in zip(self._stop_signals, error.flags) if flag}
                cause = (CTRL_C if signal.SIGINT in received else
                         self._host.classify(received, self._warning_signal, deadline_hit=bool(error.flags[_DEADLINE])))
                outcome = _conclude.after_interrupt(self._run_dir, self._host, self._policy, cause, error.checkpoint)
            return broadcast_object(outcome, self._dist)
        if self._signals.forced or isinstance(error, KeyboardInterrupt):
            # Whatever a second Ctrl-C interrupted (a save turns it into torch's own error), it ends here.
            return _conclude.after_abort(self._run_dir, self._host,
                                         f"stopped by Ctrl-C at step {self._step}, without a checkpoint; run it again "
                                         "to resume from the last one")
        if error is None or isinstance(error, SystemExit) and error.code in (None, 0):
            if rank0:
                idle = self._completed_before and not self._looked_for_checkpoint  # called again, did nothing
                _conclude.finish(self._run_dir, self._host, None if idle else self._step)
            return None
        if isinstance(error, SystemExit):
            error = RuntimeError(f"the training code called sys.exit({error.code!r})")
        outcome = _conclude.after_crash(self._run_dir, self._host, self._policy, error)
        if outcome is not None:
            traceback.print_exception(error)
        return outcome

    # -- resume ---------------------------------------------------------------------------

    def _find_and_restore_run_state(self) -> None:
        if self._dist.rank == 0:
            for directory in self.checkpoint_dirs:
                recover_directory(directory)
        if not self._resume:
            return
        # One scan of the directories serves both the choice and the orphan clean-up (rank 0 only).
        found = find_checkpoints(self.checkpoint_dirs) if self._dist.rank == 0 else []
        self._restored = restore_latest(found, self._dist, weights_only=self._weights_only)
        if self._restored is None:
            return
        state, own = self._restored.state, self._restored.own
        loop = state["loop"]
        self._step, self._epoch, self._batch = loop["step"], loop["epoch"], loop["batch"]
        if loop["phase"] == "epoch_end":
            self._epoch, self._batch = self._epoch + 1, 0
        elif loop["phase"] == "train_end":
            self._train_end_saved_epoch = self._epoch
        self._metrics = dict(state["metrics"])
        self._pending_rng = {"rng": own["rng"], "epoch_rng": own["epoch_rng"]}
        self._restore_rules(state["rules"], found)
        if self._dist.rank == 0:
            append_event(self._run_dir, Event.RESUMED, job_id=self._host.job_id,
                         checkpoint=str(self._restored.path), step=self._step, epoch=self._epoch)

    def _restore_rules(self, saved: dict[str, Any], found: list[tuple[Path, Manifest]]) -> None:
        assert self._restored is not None
        protected = os.path.realpath(self._restored.path)
        for rule in self._rules:
            rule._protected = protected
            if rule._key not in saved:
                warnings.warn(f"{rule._key} has no bookkeeping in {protected}; it starts afresh", stacklevel=4)
                continue
            rule.load_state_dict(saved[rule._key])
            rule._reconcile(os.path.lexists)
        if self._dist.rank == 0:
            self._remove_orphans(protected, found)

    def _remove_orphans(self, protected: str, found: list[tuple[Path, Manifest]]) -> None:
        """Delete checkpoints a rule had evicted but not yet deleted when the job died."""
        for rule in self._rules:
            if rule.save_top_k == -1:
                continue
            kept = {os.path.realpath(p) for p in (*rule.best_k_models, rule.best_model_path, rule.last_model_path) if p}
            kept.add(protected)
            directory = os.path.realpath(rule.dirpath)
            for path, manifest in found:
                real = os.path.realpath(path)
                if manifest.rule == rule._key and os.path.dirname(real) == directory and real not in kept:
                    remove_checkpoint(path)

    def _restore_rng_at_epoch_start(self) -> None:
        """A checkpoint taken between epochs resumes its RNG just as the next epoch begins."""
        if self._pending_rng is not None and self._batch == 0:
            restore_rng(self._pending_rng["rng"])
            self._pending_rng = None

    # -- the loop -------------------------------------------------------------------------

    def _batches(self, loader: Iterable[T]) -> Iterator[T]:
        self._in_batches = True
        try:
            prepare_workers(loader, self._signals.signals)
            position = LoaderPosition.of(loader, self._tracked.values())
            position.seed_worker_samples(loader)
            position.start_epoch(loader, self._epoch)
            self._restore_rng_at_epoch_start()
            resuming = self._pending_rng is not None
            if resuming and self._pending_rng["epoch_rng"] is not None:  # type: ignore[index]
                # Recreate the epoch's iterator from the RNG it was made with (worker seeds,
                # RandomSampler orders), then continue from the RNG state at the checkpoint.
                restore_rng(self._pending_rng["epoch_rng"])  # type: ignore[index]
            self._epoch_rng = capture_rng()
            iterator = position.iterate_from(loader, self._epoch, self._batch)
            if resuming:
                restore_rng(self._pending_rng["rng"])  # type: ignore[index]
                self._pending_rng = None
            for batch in iterator:
                yield batch
                self._step += 1
                self._batch += 1
                position.note(self._batch)
                self._step_boundary()
        finally:
            self._in_batches = False
        self._batches_done_in_epoch = True
        if self._train_end_saved_epoch != self._epoch:  # not again after resuming from that very save
            self._fire_epoch_rules(on_train_end=True)

    def _step_boundary(self) -> None:
        if self._step == self._fire_drill_at and self._dist.rank == 0 and self._signals.active:
            append_event(self._run_dir, Event.FIRE_DRILL, job_id=self._host.job_id, step=self._step)
            os.kill(os.getpid(), self._warning_signal)
        stop, timed = self._agree(time_rules=True)
        fired = [(rule, rule in timed) for rule in self._rules if rule in timed or rule._step_due(self._step)]
        if fired or stop:
            self._save_by_rules(fired, phase="step", stop=stop)

    def _agree(self, *, time_rules: bool) -> tuple[list[int] | None, list[ModelCheckpoint]]:
        """All ranks' view of this boundary: stop flags (None: go on) and the time rules that fire.

        Signals may reach any rank; the deadline and the time rules are rank 0's decisions.
        """
        now = time.monotonic()
        step_seconds, self._last_boundary = now - self._last_boundary, now
        rank0 = self._dist.rank == 0
        received = self._signals.received
        flags = [int(signum in received) for signum in self._stop_signals]
        flags.append(int(rank0 and self._deadline.near(step_seconds, self._save_seconds)))
        flags += [int(time_rules and rank0 and rule._time_due()) for rule in self._time_rules]
        agreed = self._agreement.exchange(flags)
        stops = len(_STOP_FLAGS)
        timed = [rule for rule, flag in zip(self._time_rules, agreed[stops:]) if flag]
        if any(agreed[:stops]):
            self._agreement.drain()  # nothing may be in flight when the checkpoint's collectives start
            if rank0:
                reasons = [name for name, flag in zip(self._stop_reasons, agreed) if flag]
                append_event(self._run_dir, Event.SIGNAL, job_id=self._host.job_id, step=self._step,
                             reasons=reasons)
            return agreed[:stops], timed
        return None, timed

    def _fire_epoch_rules(self, *, on_train_end: bool, stop: list[int] | None = None) -> None:
        fired = [
            (rule, False)
            for rule in self._rules
            if rule._epoch_end_on_train == on_train_end and rule._epoch_due(self._epoch)
        ]
        if fired or stop:
            self._save_by_rules(fired, phase="train_end" if on_train_end else "epoch_end", stop=stop)

    def _save_by_rules(
        self, fired: list[tuple[ModelCheckpoint, bool]], *, phase: str, stop: list[int] | None = None
    ) -> None:
        """Plan on rank 0 (the file system it sees decides names), share, write, then evict.

        With `stop`, the same write also commits the emergency checkpoint, then raises
        `_Interrupted`: one write serves the rules due at this boundary and the stop.
        """
        plans = None
        before = [rule.state_dict() for rule, _ in fired]  # what a failed save is undone to
        if self._dist.rank == 0:
            candidates = self._candidates()
            planned: set[str] = set()
            plans = []
            for rule, time_fired in fired:
                plan = rule._plan(
                    step=self._step,
                    epoch=self._epoch,
                    metrics=candidates,
                    exists=lambda p: p in planned or os.path.lexists(p),
                    time_fired=time_fired,
                )
                planned.update(plan.save)
                plans.append(plan)
        shared = broadcast_object(
            (plans, [rule.state_dict() for rule, _ in fired]) if self._dist.rank == 0 else None, self._dist
        )
        plans, states = shared
        if self._dist.rank != 0:
            for (rule, _), state in zip(fired, states):
                rule.load_state_dict(state)
        full = [(Path(p), rule._key) for (rule, _), plan in zip(fired, plans) if not rule._weights_only for p in plan.save]
        weights = [(Path(p), rule._key) for (rule, _), plan in zip(fired, plans) if rule._weights_only for p in plan.save]
        emergency = self._emergency_dir / f"step={self._step}{CHECKPOINT_SUFFIX}"
        if stop:
            full.append((emergency, "emergency"))
        if full or weights:
            try:
                seconds = self._write(lambda: self._snapshot(phase=phase), full, weights)
            except (OSError, CheckpointError) as error:
                if stop or self._on_save_error is OnSaveError.STOP:
                    raise
                self._forget_failed_save(fired, before, error)
                return
            if full:
                self._save_seconds = seconds
        if self._dist.rank == 0:
            for plan in plans:
                for link, target in plan.link:
                    link_checkpoint(Path(link), Path(target))
                for path in plan.remove:
                    remove_checkpoint(Path(path))
            if stop:
                self._remove_older_emergency(keep=emergency)
        if stop:
            raise _Interrupted(stop, str(emergency))

    def _forget_failed_save(self, fired: list[tuple[ModelCheckpoint, bool]], before: list[dict[str, Any]],
                            error: BaseException) -> None:
        """`on_save_error="continue"`: the rules forget the save, but not that their interval restarted.

        Otherwise a time rule would be due again at the very next step, retrying a full disk at
        every step; and the rules would name a checkpoint that does not exist.
        """
        for (rule, _), state in zip(fired, before):
            state["seconds_since_time_save"] = rule.state_dict()["seconds_since_time_save"]
            rule.load_state_dict(state)
        if self._dist.rank == 0:
            append_event(self._run_dir, Event.CHECKPOINT_FAILED, job_id=self._host.job_id, step=self._step,
                         error=str(error))
            print(f"resilient: checkpoint at step {self._step} failed: {error}; training goes on "
                  "(on_save_error='continue'), the next save is tried as the rules schedule it",
                  file=sys.stderr, flush=True)

    def _write(self, snapshot: Callable[[], Snapshot], full: list[tuple[Path, str]],
               weights: list[tuple[Path, str]] | None = None) -> float:
        """Write with every rank, record each committed checkpoint as an event; returns the seconds taken."""
        started = time.monotonic()
        committed = write_together(self._dist, self._tracked, snapshot, full, weights or [])
        seconds = time.monotonic() - started
        rules = {rule._key: rule for rule in self._rules}
        for path, manifest in committed:
            rule = rules.get(manifest.rule)
            append_event(
                self._run_dir, Event.CHECKPOINT, job_id=self._host.job_id,
                rule=_rule_record(rule) if rule else {"kind": manifest.rule}, path=str(path),
                step=manifest.step, epoch=manifest.epoch, seconds=round(seconds, 3),
                bytes=sum(entry.size for entry in manifest.files.values()),
            )
        return seconds

    def _remove_older_emergency(self, keep: Path) -> None:
        """One emergency checkpoint is enough once it is committed (but the resume point stays)."""
        protected = os.path.realpath(self._restored.path) if self._restored else None
        for path, _ in find_checkpoints([self._emergency_dir]):
            if os.path.realpath(path) not in (os.path.realpath(keep), protected):
                remove_checkpoint(path)

    def _candidates(self) -> dict[str, float | int]:
        metrics: dict[str, float | int] = {name: float(value) for name, value in self._metrics.items()}
        metrics["epoch"] = self._epoch
        metrics["step"] = self._step
        return metrics

    def _snapshot(self, *, phase: str = "step") -> Snapshot:
        """The loop's position; `phase` says whether the epoch's batches or the whole epoch are done."""
        metrics = {name: float(value) for name, value in self._metrics.items()}
        return Snapshot(
            step=self._step,
            epoch=self._epoch,
            loop={"step": self._step, "epoch": self._epoch, "batch": self._batch, "phase": phase},
            metrics=metrics,
            rules={rule._key: rule.state_dict() for rule in self._rules},
            epoch_rng=self._epoch_rng if self._batch else None,
        )
