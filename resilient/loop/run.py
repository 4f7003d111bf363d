"""`Run`: the training-loop helper that checkpoints by the rules and resumes bit for bit.

The loop's boundaries (the moment `batches()` is asked for the next batch, the end of an epoch's
batches, the end of an epoch) are the one place where checkpoints are taken: the optimizer step
is complete, no batch is half-consumed, and every rank is at the same point. Saving there, and
restoring the RNG states at the matching point of the resumed loop, is what makes an interrupted
run end with the same weights as one that never stopped.

`Run` is the facade users see; the work is done by collaborators that take what they need as
arguments: `Session` (lock, start and end records, signals, exit code), `Boundaries` (the agreed
stop flags and the rules due), `Saver` (plan, write, clean up) and `resume` (what to carry on from).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch

from ..checkpoint import CHECKPOINT_SUFFIX, read_manifest
from ..coordination import (
    Deadline,
    DistInfo,
    SignalRecorder,
    StepAgreement,
    broadcast_object,
    gather_to_main,
    init_distributed,
)
from ..requeue import Notify, RequeuePolicy, detect_host
from ..rules import ModelCheckpoint, check_rule_set, rule_list
from ..rundir import Event, checkpoints_dir, emergency_dir, tracker_id
from ..settings import DEFAULT_WARNING_SIGNAL, signal_number
from . import _arguments as arguments
from ._boundary import Boundaries, Interrupted, StopFlags
from ._journal import Journal
from ._position import LoaderPosition
from ._progress import Phase, Progress
from ._resume import Restored, resume
from ._rng import PendingRng, make_epoch_iterator, restore_rng
from ._saver import Saver, Stall
from ._saving import OnSaveError
from ._session import Session
from ._sharding import ShardedResume, restore_sharded, sharded_names
from ._state import check_new_objects, is_replicated, restore_objects
from ._workers import prepare_workers
from .sampler import ResumableSampler

T = TypeVar("T")

DEADLINE_MARGIN_S = 20.0


def schedule_fire_drill(run: Run, step: int | None) -> None:
    """Make rank 0 send itself the warning signal after `step` (None: no drill), as a job file may ask."""
    run._boundaries.fire_drill_at = step


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
        async_save: write the rules' checkpoints in the background (default): the state is
            copied to host memory (as much again as the state; pinned for CUDA tensors, kept for
            the run), training goes on, and a thread writes the copy with the same atomic
            commit. A checkpoint counts (retention, `last`, events, resume) only once committed;
            a save due while one is being written waits for it; a failed background write
            surfaces at the next step boundary on every rank, as `on_save_error` says. The
            emergency checkpoint, `save_checkpoint` and the run's end wait for a write in
            flight and write synchronously. False: every save finishes before training goes
            on. A rule's own `async_save` overrides this; a state a copy cannot reproduce
            faithfully (sparse or quantized tensors, tensor subclasses) is saved synchronously.
        notify: a `resilient.Notify` (a command and/or a webhook) that rank 0 calls when a start
            of the run ends in one of its states (requeued, gave up, failed, completed by
            default), after the state is recorded; its failure never changes how the run ends.

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
        warning_signal: str | int = DEFAULT_WARNING_SIGNAL,
        max_requeues: int | None = None,
        max_crash_requeues: int = 0,
        on_save_error: str | OnSaveError = "stop",
        async_save: bool = True,
        notify: Notify | None = None,
    ) -> None:
        self._rules = rule_list(checkpoint)
        self._run_dir = arguments.run_dir_from(run_dir)
        self._emergency_dir = emergency_dir(self._run_dir)
        check_rule_set(self._rules, default_dirpath=checkpoints_dir(self._run_dir), emergency_dir=self._emergency_dir)
        self._resume = arguments.check_flag("resume", resume)
        self._weights_only = arguments.check_flag("weights_only", weights_only)
        arguments.check_backend_and_clock(backend, clock)
        warning = signal_number(warning_signal, name="warning_signal")
        policy = RequeuePolicy(max_requeues, max_crash_requeues)
        on_error = OnSaveError.parse(on_save_error)
        background = arguments.check_flag("async_save", async_save)
        if notify is not None and not isinstance(notify, Notify):
            raise TypeError(f"notify must be a resilient.Notify, not {notify!r:.80}")
        for rule in self._rules:
            rule.bind(checkpoints_dir(self._run_dir), clock)
        self._dist: DistInfo = init_distributed(backend)
        host = detect_host()
        journal = Journal(self._run_dir, host.job_id, writes=self._dist.rank == 0)
        self._signals = SignalRecorder((warning, signal.SIGTERM, signal.SIGINT))
        agreement = StepAgreement(self._dist, width=StopFlags.width(sum(rule.timed for rule in self._rules)))
        deadline = Deadline(host.end_time() if self._dist.rank == 0 else None, margin_s=DEADLINE_MARGIN_S)
        self._boundaries = Boundaries(self._dist, self._rules, self._signals, warning, deadline, agreement, journal)
        self._tracked: dict[str, Any] = {}
        self._saver = Saver(self._dist, journal, self._rules, self._tracked, self._emergency_dir, on_error,
                            background)
        self._journal = journal  # what resume records in
        self._at = Progress()
        self._restored: Restored | None = None
        self._looked_for_checkpoint = False
        self._pending_rng: PendingRng | None = None
        self._loop_started = False
        self._stepped = False  # whether this start has done a step (then its staging buffers were asked for)
        self._in_batches = False
        self._batches_done_in_epoch = False
        self._train_end_saved_epoch: int | None = None
        self._session = Session(self._run_dir, self._dist, host, self._signals, agreement, policy, warning, notify)
        self._session.open()
        self._boundaries.heartbeat = self._session.heartbeat

    # -- public surface -------------------------------------------------------------------

    @property
    def step(self) -> int:
        """Optimizer steps (batches) completed since the run began, across restarts."""
        return self._at.step

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 0."""
        return self._at.epoch

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
        return self._session.completed_before

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
        check_new_objects(objects, self._tracked)
        self._tracked.update(objects)
        sharded = sharded_names(self._tracked)
        if sharded and any(rule.weights_only for rule in self._rules):
            raise ValueError(f"track(): a save_weights_only rule cannot save sharded (FSDP) state "
                             f"({', '.join(sorted(sharded))}): it writes on rank 0 alone, which holds only "
                             "its shards; use full checkpoints")
        resuming = not self._looked_for_checkpoint
        if resuming:  # the sharded objects load while the checkpoint is chosen, their files verified as read
            self._looked_for_checkpoint = True
            self._find_and_restore_run_state(
                ShardedResume(objects, self._tracked, sharded, weights_only=self._weights_only) if sharded else None)
        if self._restored is not None:
            state, own = self._restored.state, self._restored.own
            plain = {name: obj for name, obj in objects.items() if name not in sharded}
            self._warn_of_mapped_objects(plain)
            restore_objects(plain, state["objects"], own["objects"], str(self._restored.path),
                            self._restored.pages.release)
            if not resuming:
                restore_sharded(objects, self._tracked, sharded, state.get("sharded", ()), self._restored.path,
                                self._restored.manifest.files, weights_only=self._weights_only)

    def _warn_of_mapped_objects(self, objects: dict[str, Any]) -> None:
        """On another number of ranks than the checkpoint's, rank r gets saved rank r % N's own
        objects: right for a `ResumableSampler` (its state holds no rank), a guess for the rest."""
        assert self._restored is not None
        saved = self._restored.manifest.world_size
        mapped = sorted(name for name, obj in objects.items()
                        if not is_replicated(obj) and not isinstance(obj, ResumableSampler))
        if saved != self._dist.world_size and mapped and self._dist.rank == 0:
            warnings.warn(f"resuming {saved} ranks' checkpoint {self._restored.path} on {self._dist.world_size}: "
                          f"per-rank object(s) {', '.join(mapped)} of rank r get saved rank r % {saved}'s state",
                          stacklevel=3)

    def epochs(self, n: int) -> Iterator[int]:
        """Yield epoch numbers from the restored epoch up to `n - 1`; epoch rules fire after each."""
        arguments.check_epochs(n)
        if not self._loop_started and self._restored is not None and self._at.epoch >= n and self._dist.rank == 0:
            print(f"resilient: nothing left to train: resumed at epoch {self._at.epoch}, step {self._at.step} from "
                  f"{self._restored.path}, and epochs({n}) ends before it; use a new run_dir to train again",
                  file=sys.stderr, flush=True)
        self._loop_started = True
        return self._epochs(n)

    def _epochs(self, n: int) -> Iterator[int]:
        while self._at.epoch < n:
            self._restore_rng_at_epoch_start()
            yield self._at.epoch
            if not self._batches_done_in_epoch:
                self._boundary(Phase.TRAIN_END)
            self._boundary(Phase.EPOCH_END)
            self._at.epoch += 1
            self._at.batch = 0
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
        self._at.log(name, value)

    def tracker_id(self, tracker: str, new: Callable[[], str] | None = None) -> str:
        """This run's identity in an experiment tracker ("wandb", "mlflow" or "tensorboard"), the
        same at every start of the run, so a requeued run logs on as one run, not a new one::

            wandb.init(project="p", id=run.tracker_id("wandb"), resume="allow")
            mlflow.start_run(run_id=run.tracker_id("mlflow", new=lambda: client.create_run(exp).info.run_id))
            SummaryWriter(f"tb/{run.tracker_id('tensorboard')}", purge_step=run.step)

        Made the first time it is asked for (by `new` where the tracker assigns ids, else 8
        random letters and digits) and kept in ``<run_dir>/trackers.json``; every rank gets the
        same. TensorBoard's ``purge_step`` drops what a crashed start logged past the checkpoint
        the run resumed from, whose steps are trained again.
        """
        return tracker_id(self._run_dir, tracker, new)

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write a full, resumable checkpoint to `path` (a `.ckpt` directory); every rank must call.

        Like Lightning's `trainer.save_checkpoint`: all ranks take part, rank 0 writes.
        """
        self._saver.save_manual(arguments.checkpoint_path(path, CHECKPOINT_SUFFIX), self._at)

    # -- for a training loop resilient does not drive (an integration's, such as Lightning's) --

    @property
    def emergency_dir(self) -> Path:
        """Where the checkpoint taken at a stop goes; searched on resume like the rules' directories."""
        return self._emergency_dir

    def share(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (every rank calls): one rank decides what all act on, such as
        the checkpoint to resume from, which a listing of a shared file system could make differ."""
        return broadcast_object(obj, self._dist)

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's `obj`, in rank order, on rank 0, None on the others (every rank calls): rank 0
        learns that the others are done (their files of a checkpoint written, say) and how it went."""
        return gather_to_main(obj, self._dist)

    def take_back_signals(self) -> None:
        """Answer the stop signals again after a framework replaced our handlers with its own.

        Lightning's Trainer installs its handlers as `fit` starts (and would save, requeue and
        broadcast inside them); calling this afterwards leaves one handler, which only records.
        """
        self._signals.reclaim()

    def agree_on_stop(self, step: int, *, save_seconds: float | None = None) -> StopFlags | None:
        """Every rank, after each optimizer step of a loop resilient does not drive: whether to stop now.

        The same per-step agreement as `batches()`: a signal seen by any rank, the deadline or
        a fire drill stops every rank at the same step (None: go on). `save_seconds` is what the
        last full save took, for the deadline. On a stop, commit the emergency checkpoint into
        `emergency_dir` on every rank, then call `stopped`.
        """
        self._loop_started = True
        self._at.step = step
        if not self._stepped:
            self._first_step()
        _, stop, _ = self._boundaries.decide(Phase.STEP, step, self._at.epoch, save_seconds, False)
        return stop

    def record_checkpoint(self, checkpoint: str | os.PathLike[str], *, seconds: float | None) -> None:
        """Record a checkpoint a framework wrote and committed (the `checkpoint` event `status` shows),
        read from its manifest; `seconds`: how long the save took, if known. Rank 0 records; others may call."""
        if self._dist.rank == 0:
            path = Path(checkpoint)
            # A framework saves in its training thread: training stalled for the whole save.
            stall = None if seconds is None else Stall(time.time() - seconds, seconds)
            self._saver.record_committed([(path, read_manifest(path))], seconds, stall)

    def record_resume(self, checkpoint: str | os.PathLike[str]) -> None:
        """Record that a framework resumed from `checkpoint` (the `resumed` event). Rank 0 records."""
        if self._dist.rank == 0:
            manifest = read_manifest(Path(checkpoint))
            self._journal.record(Event.RESUMED, checkpoint=os.fspath(checkpoint), step=manifest.step,
                                 epoch=manifest.epoch, world_size=self.world_size,
                                 saved_world_size=manifest.world_size)

    def stopped(self, stop: StopFlags, checkpoint: str | os.PathLike[str]) -> NoReturn:
        """Leave the training loop after the emergency `checkpoint` is committed, as a stop in
        `batches()` leaves: the `with Run` (or the submitted job) then requeues or exits by the policy."""
        raise Interrupted(stop, os.fspath(checkpoint))

    def close(self, *, together: bool = True) -> None:
        """Wait for a background save in flight, give the signals back and leave the process group
        if this run created it; a failed background save raises here.

        `together=False` when this rank alone is leaving (it crashed): no collective then.
        """
        self._saver.stop_reserving()
        try:
            if together:
                self._saver.settle()
            else:
                self._saver.settle_alone()
        finally:
            self._session.close(together=together)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        """Record how the run ended; after an interruption or a crash, requeue or exit as the policy says.

        Every way out records a final state and an end event: a finished loop, a stop, an
        exception, Ctrl-C, `sys.exit()`.
        """
        self._saver.stop_reserving()
        if error is None:
            try:
                self._saver.settle()  # the end of training waits for a background write, with every rank
            except BaseException as failure:  # the run ends as this failure says, and raises it
                self._session.end(failure, step=self._at.step, did_anything=True)
                raise
        else:
            try:
                self._saver.settle_alone()  # rank 0's write in flight is finished, not lost
            except KeyboardInterrupt:
                pass  # one more Ctrl-C: the interpreter still waits for the write as it exits
        self._session.end(error, step=self._at.step, did_anything=self._looked_for_checkpoint)

    # -- resume and the loop --------------------------------------------------------------

    def _find_and_restore_run_state(self, sharded: ShardedResume | None) -> None:
        resumed = resume(self.checkpoint_dirs, self._dist, self._journal, enabled=self._resume,
                         weights_only=self._weights_only, sharded=sharded)
        if resumed is None:
            return
        self._restored, self._at, self._pending_rng = resumed.restored, resumed.progress, resumed.rng
        self._train_end_saved_epoch = resumed.train_end_saved_epoch
        self._saver.resume_from(resumed.restored)

    def _restore_rng_at_epoch_start(self) -> None:
        """A checkpoint taken between epochs resumes its RNG just as the next epoch begins."""
        if self._pending_rng is not None and self._at.batch == 0:
            restore_rng(self._pending_rng.rng)
            self._pending_rng = None

    def _batches(self, loader: Iterable[T]) -> Iterator[T]:
        self._in_batches = True
        try:
            prepare_workers(loader, self._signals.signals)
            position = LoaderPosition.of(loader, self._tracked.values())
            position.seed_worker_samples(loader)
            position.start_epoch(loader, self._at.epoch)
            self._restore_rng_at_epoch_start()
            iterator, self._at.epoch_rng = make_epoch_iterator(
                lambda: position.iterate_from(loader, self._at.epoch, self._at.batch), self._pending_rng,
                persistent=position.persistent)
            self._pending_rng = None
            first = not self._stepped
            for batch in iterator:
                yield batch
                self._at.step += 1
                self._at.batch += 1
                position.note(self._at.batch)
                if first:  # a local, not an attribute: the usual step pays nothing for it
                    first = False
                    self._first_step()
                    self._saver.reserve()  # the state has its full size now (an optimizer's after its first step)
                self._boundary(Phase.STEP)
        finally:
            self._in_batches = False
        self._batches_done_in_epoch = True
        if self._train_end_saved_epoch != self._at.epoch:  # not again after resuming from that very save
            self._boundary(Phase.TRAIN_END)

    def _first_step(self) -> None:
        """This start's first step is done: what came before it was restoring (the `first_step` event)."""
        self._stepped = True
        self._journal.record(Event.FIRST_STEP, step=self._at.step)

    def _boundary(self, phase: Phase) -> None:
        """Save what the rules due at this boundary ask for; with agreed stop flags, stop after saving."""
        fired, stop, written = self._boundaries.decide(phase, self._at.step, self._at.epoch, self._saver.save_seconds,
                                                       self._saver.written)
        if written:
            self._saver.settle_written(self._at.step)
        if fired or stop:
            self._saver.save(fired, self._at, phase, stop)
