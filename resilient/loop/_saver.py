"""Saving by the rules: plan on rank 0, share the plan, write with every rank, then link and evict.

This is the single seam between deciding to save and the bytes on disk: the asynchronous and
the sharded writers plug in here (in `write`), and nothing else in the loop needs to change. It
also keeps the rules' bookkeeping honest with the disk: after a resume it gives each rule its
bookkeeping back and deletes the checkpoints a rule had evicted but not yet deleted when the job
died; after a stop it keeps one emergency checkpoint; after a failed save it makes the rules
forget it (``on_save_error="continue"``).

An asynchronous save is planned like any other, but its event, links and evictions wait until it
is committed (the writer's thread does them then): until then the older checkpoints stay, so
retention never deletes the only committed checkpoint while a newer one is still being written. A save due while one is in
flight waits for it first, and so do the emergency checkpoint, a manual save and the run's end.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import (
    CHECKPOINT_SUFFIX,
    CheckpointError,
    CheckpointOrigin,
    Staged,
    find_checkpoints,
    link_checkpoint,
    read_manifests,
    remove_checkpoint,
    split_dtensors,
)
from ..coordination import DistInfo, broadcast_object, side_group
from ..rules import CheckpointRule, SavePlan, same_rule, saved_state
from ..rundir import Event, event_time
from ._background import BackgroundWriter
from ._boundary import Fired, Interrupted, StopFlags
from ._journal import Journal
from ._progress import Phase, Progress
from ._resume import Restored
from ._saving import Background, Committed, Files, OnSaveError, Snapshot, share_outcome, write_together
from ._sharding import sharded_names, sharded_states
from ._state import STATE_FILE, split_states

Target = tuple[Path, Any]  # a checkpoint path and the manifest's rule: an identity or a CheckpointOrigin


@dataclass(frozen=True)
class _InFlight:
    """A save rank 0 is writing in the background, as every rank remembers it until it is settled."""

    fired: Fired
    before: list[dict[str, Any]]  # the rules' bookkeeping ahead of it, restored if it fails
    plans: list[SavePlan]
    step: int
    full: bool


@dataclass(frozen=True)
class Stall:
    """A save's stall: training is blocked from `began` (wall clock, for the event) for `seconds`.

    A synchronous save stalls until it is committed; an asynchronous one until the state is
    copied and its write handed to the background thread, which is all training waits for.
    """

    began: float  # time.time()
    seconds: float

    @classmethod
    def since(cls, began: float, monotonic: float) -> Stall:
        """The stall from `began` (and `monotonic`, the same moment by `time.monotonic()`) until now."""
        return cls(began, time.monotonic() - monotonic)


@dataclass(frozen=True)
class _AfterCommit:
    """The writer, as `write_together` is offered it, with what its thread does once a write commits
    (told how long training stalled for it: from `began` until the write was handed over)."""

    writer: BackgroundWriter
    then: Callable[[Committed, float, Stall], None]
    side: Callable[[], DistInfo]
    began: tuple[float, float]  # time.time() and time.monotonic() as the save began

    def take(self, files: Files, write: Callable[[Files], Committed]) -> bool:
        return self.writer.take(files, write, self._committed)

    def stage(self, state: Any) -> Staged | None:
        return self.writer.stage(state)

    def start(self, staged: Staged, write: Callable[[Any], Committed]) -> None:
        self.writer.start(staged, write, self._committed)

    def _committed(self, committed: Committed, seconds: float) -> None:
        """In the writer's thread, at the commit: training's stall ended as the write began, `seconds` ago."""
        self.then(committed, seconds, Stall(self.began[0], time.monotonic() - seconds - self.began[1]))


class Saver:
    """Writes the checkpoints a run's rules plan, its emergency ones, and cleans up after both."""

    def __init__(self, dist: DistInfo, journal: Journal, rules: Sequence[CheckpointRule], tracked: Mapping[str, Any],
                 emergency_dir: Path, on_save_error: OnSaveError, async_save: bool) -> None:
        self._dist = dist
        self._journal = journal
        self._rules = rules
        self._tracked = tracked  # the run's tracked objects, as they are when a save happens
        self._emergency_dir = emergency_dir
        self._on_save_error = on_save_error
        self._async_save = async_save  # for the rules that leave it to the run
        self._any_async = any(async_save if rule.async_save is None else rule.async_save for rule in rules)
        self._protected: str | None = None  # the checkpoint the run resumed from: never deleted
        # Every rank's: rank 0 writes the replicated state, and each rank its shards of a sharded one.
        self._writer = BackgroundWriter()
        self._side: DistInfo | None = None  # the group of sharded background writes, made at the first
        self._in_flight: _InFlight | None = None
        self.save_seconds: float | None = None  # how long the last full save took (the deadline needs it)

    @property
    def written(self) -> bool:
        """Rank 0: the background write has ended and waits to be settled (every rank must then settle)."""
        return self._dist.rank == 0 and self._writer.finished and self._in_flight is not None

    def save(self, fired: Fired, progress: Progress, phase: Phase, stop: StopFlags | None) -> None:
        """Plan on rank 0 (the file system it sees decides names), share, write, then evict.

        When every rule due saves asynchronously, rank 0 copies the state and writes the copy
        while training goes on; the links and evictions follow its commit. With `stop`, the write
        is never in the background, also commits the emergency checkpoint, then raises
        `Interrupted`: one write serves the rules due at this boundary and the stop.
        """
        began = time.time(), time.monotonic()  # training stalls from here: waiting for a write in flight too
        self.settle()
        rank0 = self._dist.rank == 0
        before = [rule.state_dict() for rule, _ in fired]  # what a failed save is undone to
        plans = self._plan(fired, progress) if rank0 else None
        plans, states = broadcast_object((plans, [rule.state_dict() for rule, _ in fired]) if rank0 else None,
                                         self._dist)
        if not rank0:
            for (rule, _), state in zip(fired, states):
                rule.load_state_dict(state)
        full = [(Path(p), rule.identity) for (rule, _), plan in zip(fired, plans) if not rule.weights_only
                for p in plan.save]
        weights = [(Path(p), rule.identity) for (rule, _), plan in zip(fired, plans) if rule.weights_only
                   for p in plan.save]
        emergency = self._emergency_dir / f"step={progress.step}{CHECKPOINT_SUFFIX}"
        if stop:
            full.append((emergency, CheckpointOrigin.EMERGENCY.value))
            self.stop_reserving()
        if full or weights:
            try:
                background = not stop and all(self._async_save if rule.async_save is None else rule.async_save
                                              for rule, _ in fired)
                seconds = self.write(lambda: progress.snapshot(self._rules, phase), full, weights,
                                     then=(lambda: self._link_and_evict(plans)) if background else None, began=began)
            except (OSError, CheckpointError) as error:
                if stop or self._on_save_error is OnSaveError.STOP:
                    raise
                self._forget_failed_save(fired, before, progress.step, error)
                return
            if seconds is None:
                self._in_flight = _InFlight(fired, before, plans, progress.step, bool(full))
                return
            if full:
                self.save_seconds = seconds
        self._link_and_evict(plans)
        if rank0 and stop:
            self._remove_older_emergency(keep=emergency)
        if stop:
            raise Interrupted(stop, str(emergency))

    def reserve(self) -> None:
        """Every rank, once the state has its full size (an optimizer's state exists after its
        first step): make the staging buffers of asynchronous saves in the background (rank 0's
        for the replicated state, every rank's for its shards), so that the first save does not
        stall on making them."""
        if not self._any_async or self._in_flight is not None:
            return
        sharded = sharded_names(self._tracked)
        shards = split_dtensors(sharded_states(self._tracked, sharded))[0] if sharded else None
        if self._dist.rank == 0:
            replicated, _ = split_states(self._tracked, rank=0, sharded=sharded)
            self._writer.reserve(({STATE_FILE: {"objects": replicated}}, shards))
        elif shards is not None:
            self._writer.reserve(shards)

    def stop_reserving(self) -> None:
        """The run is ending: staging buffers still being made are not needed (see `reserve`)."""
        self._writer.stop_reserving()

    def settle_written(self, step: int) -> None:
        """Every rank, when the agreed flags say rank 0's write had ended: settle it, unless the
        flag is about an earlier write, settled since by a save at the boundary that saw the flag.

        With several ranks the flag seen at one step boundary is agreed at the next, so a write
        started at the boundary that saw it (or later) is not the one it is about; waiting for
        it here would stall training for the whole write.
        """
        seen_at = step - (1 if self._dist.world_size > 1 else 0)
        if self._in_flight is not None and self._in_flight.step < seen_at:
            self.settle()

    def settle(self) -> None:
        """Finish the save in flight, if any, on every rank together: its failure is raised (or
        forgotten, ``on_save_error="continue"``) on every rank."""
        in_flight = self._in_flight
        if in_flight is None:
            return
        failure: BaseException | None = None
        if self._writer.busy:  # rank 0's write, or this rank's shards
            try:
                self._writer.wait()
            except (Exception, SystemExit) as error:  # shared below, then raised on every rank
                failure = error
        self._in_flight = None  # not before: a Ctrl-C while waiting leaves the write for `settle_alone`
        try:
            share_outcome(self._dist, failure)
        except (OSError, CheckpointError) as error:
            if self._on_save_error is OnSaveError.STOP:
                raise
            self._forget_failed_save(in_flight.fired, in_flight.before, in_flight.step, error)
            return
        if in_flight.full and self._dist.rank == 0:
            self.save_seconds = self._writer.seconds

    def settle_alone(self) -> None:
        """At a run's end that not every rank reached (a crash): wait for this rank's write, sharing nothing."""
        in_flight = self._in_flight
        if in_flight is None or not self._writer.busy:
            return
        try:
            self._writer.wait()
        except (Exception, SystemExit) as error:
            self._journal.record(Event.CHECKPOINT_FAILED, step=in_flight.step, error=str(error))
            print(f"resilient: checkpoint at step {in_flight.step} failed: {error}", file=sys.stderr, flush=True)
            return
        finally:
            self._in_flight = None

    def _link_and_evict(self, plans: Sequence[SavePlan] | None) -> None:
        """Rank 0, once the plans' checkpoints are committed: their `last` links and the evictions."""
        if self._dist.rank != 0 or plans is None:
            return
        for plan in plans:
            for link, target in plan.link:
                _tidy(f"pointing {link} at the new checkpoint {target}", lambda: link_checkpoint(Path(link), Path(target)))
            for path in plan.remove:
                _tidy(f"deleting {path}, which a new checkpoint replaces (a start that resumes deletes it)",
                              lambda: remove_checkpoint(Path(path)))

    def save_manual(self, path: Path, progress: Progress) -> None:
        """`Run.save_checkpoint`: a full checkpoint no rule planned, written now by every rank."""
        began = time.time(), time.monotonic()
        self.settle()
        self.write(lambda: progress.snapshot(self._rules, Phase.STEP), [(path, CheckpointOrigin.MANUAL.value)],
                   began=began)

    def write(self, snapshot: Callable[[], Snapshot], full: Sequence[Target], weights: Sequence[Target] = (), *,
              then: Callable[[], None] | None = None, began: tuple[float, float] | None = None) -> float | None:
        """Write with every rank, record each committed checkpoint as an event; returns the seconds taken.

        With `then` (what follows the commit: links, evictions), rank 0 may hand the write to its
        writer, whose thread records it and runs `then` the moment it commits: then None.
        `began`: when training stopped for this save (`time.time()`, `time.monotonic()`; default now).
        """
        started = time.monotonic()
        began = began or (time.time(), started)
        offload = None
        if then is not None:
            offload = _AfterCommit(self._writer, lambda committed, seconds, stall: (
                self.record_committed(committed, seconds, stall), then()), self._side_group, began)
        committed = write_together(self._dist, self._tracked, snapshot, full, weights, offload)
        if isinstance(committed, Background):
            return None
        seconds = time.monotonic() - started
        self.record_committed(committed, seconds, Stall.since(*began))
        return seconds

    def _side_group(self) -> DistInfo:
        """The group the writers' threads of a sharded save talk on; made by every rank at its first."""
        if self._side is None:
            self._side = side_group(self._dist)
        return self._side

    def record_committed(self, committed: Committed, seconds: float | None, stall: Stall | None) -> None:
        """A `checkpoint` event for each committed checkpoint (rank 0's journal writes; the others' do nothing),
        with how long training stalled for it, if known (the targets of one write share its stall)."""
        stalled = {} if stall is None else {"stalled_at": event_time(stall.began),
                                            "stall_seconds": round(stall.seconds, 3)}
        for path, manifest in committed:
            rule = next((rule for rule in self._rules if same_rule(manifest.rule, rule.identity)), None)
            self._journal.record(
                Event.CHECKPOINT, rule=rule.record if rule else {"kind": manifest.rule}, path=str(path),
                step=manifest.step, epoch=manifest.epoch, seconds=round(seconds, 3) if seconds is not None else None,
                bytes=sum(entry.size for entry in manifest.files.values()), **stalled,
            )

    def resume_from(self, restored: Restored) -> None:
        """Give each rule its bookkeeping back from `restored`, and (rank 0) delete orphaned checkpoints.

        The checkpoint resumed from is protected: no rule and no emergency clean-up deletes it.
        """
        self._protected = os.path.realpath(restored.path)
        saved = restored.state["rules"]
        for rule in self._rules:
            rule.protect(self._protected)
            state = saved_state(saved, rule.identity)
            if state is None:
                warnings.warn(f"{rule.identity} has no bookkeeping in {self._protected}; it starts afresh",
                              stacklevel=4)
                continue
            rule.load_state_dict(state)
            rule.reconcile(os.path.lexists)
        if self._dist.rank == 0:
            self._remove_orphans()

    def _plan(self, fired: Fired, progress: Progress) -> list[SavePlan]:
        candidates = progress.candidates()
        planned: set[str] = set()
        plans = []
        for rule, time_fired in fired:
            plan = rule.plan(step=progress.step, epoch=progress.epoch, metrics=candidates,
                             exists=lambda p: p in planned or os.path.lexists(p), time_fired=time_fired)
            planned.update(plan.save)
            plans.append(plan)
        return plans

    def _forget_failed_save(self, fired: Fired, before: list[dict[str, Any]], step: int, error: BaseException) -> None:
        """`on_save_error="continue"`: the rules forget the save, but not that their interval restarted."""
        for (rule, _), state in zip(fired, before):
            rule.forget_failed_save(state)
        if self._dist.rank == 0:
            self._journal.record(Event.CHECKPOINT_FAILED, step=step, error=str(error))
            print(f"resilient: checkpoint at step {step} failed: {error}; training goes on "
                  "(on_save_error='continue'), the next save is tried as the rules schedule it",
                  file=sys.stderr, flush=True)

    def _remove_orphans(self) -> None:
        """Delete checkpoints a rule had evicted but not yet deleted when the job died.

        Whose a checkpoint is, its manifest's rule, is all this needs: its payload is not looked
        at (`read_manifests`), so a start among thousands of checkpoints reads one small file
        each, and an evicted checkpoint is deleted even if it is damaged.
        """
        keeping = [(rule, rule.dirpath, kept_paths) for rule in self._rules
                   if rule.dirpath is not None and (kept_paths := rule.kept_paths()) is not None]
        found = read_manifests(sorted({Path(dirpath) for _, dirpath, _ in keeping}))
        for rule, dirpath, kept_paths in keeping:
            kept = {os.path.realpath(path) for path in kept_paths}
            kept.add(self._protected)
            directory = os.path.realpath(dirpath)
            for path, manifest in found:
                real = os.path.realpath(path)
                if same_rule(manifest.rule, rule.identity) and os.path.dirname(real) == directory and real not in kept:
                    _tidy(f"deleting {path}, which a rule had replaced", lambda: remove_checkpoint(path))

    def _remove_older_emergency(self, keep: Path) -> None:
        """One emergency checkpoint is enough once it is committed (but the resume point stays)."""
        for path, _ in find_checkpoints([self._emergency_dir]):
            if os.path.realpath(path) not in (os.path.realpath(keep), self._protected):
                _tidy(f"deleting the older emergency checkpoint {path}", lambda: remove_checkpoint(path))


def _tidy(what: str, tidy: Callable[[], None]) -> None:
    """Run `tidy`, a link or a deletion around committed checkpoints: its failure (a checkpoint
    that cannot be deleted, a link that cannot be made) is a warning, not a failed save nor a
    failed start. The checkpoints are committed and count; failing the run for it, or making the
    rules forget a save, would lose a good checkpoint over a spare one."""
    try:
        tidy()
    except OSError as error:
        warnings.warn(f"resilient: {what} failed: {error}", stacklevel=3)
