"""Writing one checkpoint with every rank taking part.

All ranks enter together at the same step boundary. Each rank hands its own small state (RNG,
data position, per-rank objects) to rank 0, which serializes the replicated state once and
commits atomically; then rank 0 tells every rank whether the commit succeeded, so no rank runs
ahead of a checkpoint that may not exist, and a failed write raises on every rank instead of
leaving the others waiting in the next collective. When rank 0 hands the write to the background
(an asynchronous save), that word is "started", and the outcome is shared later, by every rank
calling `share_outcome` at the same boundary. With sharded state, every rank writes its shards
and, beside them, its own small state itself (`_write_shards`), and reports their checksums to
rank 0 instead of handing it that state. Sharded state written asynchronously is copied by
every rank and written by every rank's writer (`_shards_in_background`); rank 0's is the word
that counts there too, as it commits only after every rank reported its files written.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..checkpoint import CheckpointError, CheckpointKind, FileEntry, Manifest, make_temporary, write_checkpoint
from ..coordination import DistInfo, broadcast_object, gather_to_main
from ..rundir import Vocabulary
from ._rng import capture_rng
from ._sharding import sharded_names, sharded_states
from ._state import STATE_FILE, module_states, rank_file, split_states

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

    from ..checkpoint import Staged


class OnSaveError(Vocabulary):
    """What a failed periodic save does to training (a failed emergency checkpoint always ends it)."""

    STOP = "stop"  # end the run as failed, naming the cause: no work is done that could not be saved
    CONTINUE = "continue"  # warn, record the failure, and try again at the next save a rule schedules

    @classmethod
    def parse(cls, value: object, *, name: str = "on_save_error") -> OnSaveError:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(member.value for member in cls)
            raise ValueError(f"{name} must be one of {choices}, not {value!r:.40}") from None


@dataclass
class Snapshot:
    """What the loop knows at a boundary, beyond the tracked objects themselves."""

    step: int
    epoch: int
    loop: dict[str, Any]
    metrics: dict[str, float]
    rules: dict[str, Any] = field(default_factory=dict)
    epoch_rng: dict[str, Any] | None = None


class Background:
    """What `write_together` answers on every rank when rank 0 went on writing in the background."""


BACKGROUND = Background()
_STARTED = "started in the background"  # rank 0's word to the other ranks, where a failure's text would be

Files = tuple[dict[str, Any] | None, dict[str, Any] | None]  # the full and the weights-only payload files
Committed = list[tuple[Path, Manifest]]


class Offload(Protocol):
    """Where a rank may hand a write to finish in the background (`loop/_background.py`)."""

    def take(self, files: Files, write: Callable[[Files], Committed]) -> bool:
        """Copy `files` and return True if `write(copy)` will run in the background; False: write now."""
        ...

    def stage(self, state: Any) -> Staged | None:
        """A copy of `state` for `start`, or None where the copy would not be faithful."""
        ...

    def start(self, staged: Staged, write: Callable[[Any], Committed]) -> None:
        """Run `write(staged.state)` in the background."""
        ...

    def side(self) -> DistInfo:
        """The ranks' group for a background thread's collectives (made the first time, by every rank)."""
        ...


@dataclass(frozen=True)
class _Targets:
    """One boundary's targets and what their manifests record."""

    full: Sequence[tuple[Path, Any]]
    weights: Sequence[tuple[Path, Any]]
    snap: Snapshot
    world_size: int
    shards: tuple[Path, dict[str, FileEntry]] | None = None  # every rank's shard files, in the first temporary

    def write(self, files: Files) -> Committed:
        full_files, weight_files = files
        committed: Committed = []
        meta = {"step": self.snap.step, "epoch": self.snap.epoch, "metrics": self.snap.metrics,
                "world_size": self.world_size}
        if self.full:  # with sharded state, the full files were written beside the shards (`_write_shards`)
            assert full_files is not None or self.shards is not None
            manifests = write_checkpoint(self.full, {} if self.shards is not None else full_files,
                                         prewritten=self.shards, **meta)
            committed += zip((path for path, _ in self.full), manifests)
        if self.weights:
            assert weight_files is not None
            manifests = write_checkpoint(self.weights, weight_files, kind=CheckpointKind.WEIGHTS.value, **meta)
            committed += zip((path for path, _ in self.weights), manifests)
        return committed


def write_together(
    dist: DistInfo,
    tracked: Mapping[str, Any],
    snapshot: Callable[[], Snapshot],
    full: Sequence[tuple[Path, Any]],
    weights: Sequence[tuple[Path, Any]] = (),
    offload: Offload | None = None,
) -> Committed | Background:
    """Commit `full` (resumable) and `weights` (model only) targets; every rank must call this.

    Each target is a path and the rule its manifest names (see `write_checkpoint`).

    With `offload`, rank 0 offers it the write; when it takes it (it copied the state and will
    write the copy), every rank returns `BACKGROUND` and learns the outcome from `share_outcome`
    later. Otherwise the write happens now. With sharded state, every rank offers its own offload
    its shards, and the write is in the background only if every rank could copy them.

    Returns what rank 0 committed, target by target (nothing on the other ranks).
    """
    snap = snapshot()
    sharded = sharded_names(tracked) if full else frozenset()
    replicated, own = split_states(tracked, rank=dist.rank, sharded=sharded) if full else ({}, {})
    part = {"objects": own, "rng": capture_rng(), "epoch_rng": snap.epoch_rng} if full else None
    # beside sharded state, every rank writes its own part itself, while it writes its shards
    gathered = (gather_to_main(part, dist) if not sharded else []) if full else None
    files: Files = (None, None)
    failure: BaseException | None = None
    if dist.rank == 0:
        try:
            files = _files(tracked, snap, replicated, gathered, sharded, bool(weights))
        except BaseException as error:  # re-raised below, after the other ranks have been told
            failure = error
    targets = _Targets(full, weights, snap, dist.world_size)
    beside = {rank_file(dist.rank): part, **(files[0] or {})} if sharded else {}  # what it writes beside its shards
    if sharded and offload is not None and _shards_in_background(dist, offload, sharded_states(tracked, sharded),
                                                                 beside, files[1], targets, failure):
        return BACKGROUND
    shards = _write_shards(dist, sharded_states(tracked, sharded), full[0][0], beside) if sharded else None
    if failure is not None and isinstance(shards, tuple):
        shutil.rmtree(shards[0], ignore_errors=True)
    failure = failure or (shards if isinstance(shards, BaseException) else None)
    committed: Committed = []
    started = False
    if dist.rank == 0 and failure is None:
        try:
            targets = replace(targets, shards=shards if isinstance(shards, tuple) else None)
            started = not sharded and offload is not None and offload.take(files, targets.write)
            if not started:
                committed = targets.write(files)
        except BaseException as error:  # re-raised below, after the other ranks have been told
            failure = error
    status = broadcast_object(_STARTED if started else None if failure is None else _describe(failure), dist)
    if status == _STARTED:
        return BACKGROUND
    share_outcome(dist, failure, status)
    return committed


def _files(tracked: Mapping[str, Any], snap: Snapshot, replicated: dict[str, Any], gathered: list[Any] | None,
           sharded: frozenset[str], weights: bool) -> Files:
    """Rank 0's payload files: the full checkpoint's (if any, with every rank's `gathered` part,
    none beside sharded state) and the weights-only one's (if `weights`)."""
    full_files: dict[str, Any] | None = None
    if gathered is not None:
        full_files = {
            STATE_FILE: {"objects": replicated, "loop": snap.loop, "rules": snap.rules, "metrics": snap.metrics,
                         "sharded": sorted(sharded)}
        }
        full_files.update({rank_file(rank): part for rank, part in enumerate(gathered)})
    return full_files, {STATE_FILE: {"objects": module_states(tracked)}} if weights else None


def _shards_in_background(dist: DistInfo, offload: Offload, states: dict[str, Any], beside: dict[str, Any],
                          weight_files: dict[str, Any] | None, targets: _Targets, failure: BaseException | None) -> bool:
    """Every rank copies its shards and the files it writes `beside` them (rank 0 also the
    `weight_files`) and, if every rank could, writes them in the background like `_write_shards`,
    DCP and our own collectives on the side group; rank 0 then commits. False (nothing started):
    write now.

    The copy is the stall (why ours, not DCP's `async_save`: `loop/_background.py`).
    """
    from ..checkpoint import split_dtensors

    side = offload.side()  # every rank is here, together: the first time, it makes the group
    try:
        plain, join = split_dtensors(states)
        staged = offload.stage((beside, weight_files, plain)) if failure is None else None
    except Exception:  # out of memory, say: never leave the other ranks waiting below; the
        staged = None  # synchronous write that follows reports a failure that persists, on every rank
    agreed = gather_to_main(staged is not None, dist)
    if not broadcast_object(agreed is not None and all(agreed), dist):
        return False
    assert staged is not None
    group = side.group.pg if side.group is not None else None  # None: a world of one, which talks to no one

    def write(copy: tuple[dict[str, Any], dict[str, Any] | None, Any]) -> Committed:
        own_files, own_weight_files, shards = copy
        written = _write_shards(side, join(shards), targets.full[0][0], own_files, group, alone=group is None)
        if isinstance(written, BaseException):
            raise written
        return replace(targets, shards=written).write((None, own_weight_files)) if side.rank == 0 else []

    offload.start(staged, write)
    return True


def _write_shards(dist: DistInfo, states: dict[str, Any], first: Path, files: Mapping[str, Any],
                  group: ProcessGroup | None = None, *, alone: bool = False
                  ) -> tuple[Path, dict[str, FileEntry]] | BaseException | None:
    """Every rank writes its `states` (DCP state dicts by name) into the temporary directory rank 0
    makes for the `first` target, DCP coordinating on `group` (None: torch's default; or none,
    `alone`), and its own `files` (for `torch.save`) there meanwhile, in a thread: their fsyncs
    overlap, and no rank waits for another's files before its shards. Rank 0 gets the directory
    and the entries of every rank's files, or the failure to share (the directory then removed;
    its own failure as it was raised); the other ranks get None and learn of a failure from
    rank 0's word, as of any other."""
    from ..checkpoint import check_reported, write_files, write_shards  # DCP: seconds to import, sharded runs only

    temp: Path | None = None
    failure: BaseException | None = None
    if dist.rank == 0:
        try:
            temp = make_temporary(first)
        except OSError as error:
            failure = error
    where = broadcast_object(None if temp is None else str(temp), dist)
    if where is None:
        return failure
    report: dict[str, FileEntry] | str
    needed: set[str] = set()
    with ThreadPoolExecutor(1, thread_name_prefix="resilient-own-files") as writing:
        own = writing.submit(write_files, Path(where), files, first)
        try:
            report, needed = write_shards(states, Path(where), dist.rank, group, alone=alone)
            report.update(own.result())
        except Exception as error:  # DCP's own failures reach every rank; this rank's own must be told
            failure, report = error, _describe(error)
    reports = gather_to_main(report, dist)
    if reports is None:
        return None
    failed = [f"rank {rank}: {each}" for rank, each in enumerate(reports) if isinstance(each, str)]
    if failure is None and failed:
        failure = CheckpointError(f"not every rank could write its files: {failed[0]}")
    entries = {name: entry for each in reports if isinstance(each, dict) for name, entry in each.items()}
    if failure is None:
        try:
            check_reported(needed, entries, Path(where))
        except CheckpointError as error:
            failure = error
    if failure is not None:
        shutil.rmtree(where, ignore_errors=True)
        return failure
    return Path(where), entries


def share_outcome(dist: DistInfo, failure: BaseException | None, status: str | None | Background = BACKGROUND) -> None:
    """Raise rank 0's write failure on every rank (rank 0's own error there; a `CheckpointError` elsewhere).

    Every rank calls it; `status` is rank 0's word when it was already shared, else it is shared now.
    """
    if isinstance(status, Background):
        status = broadcast_object(None if failure is None else _describe(failure), dist)
    if failure is not None:
        raise failure
    if status is not None:
        raise CheckpointError(f"rank 0 could not write the checkpoint: {status}")


def _describe(failure: BaseException) -> str:
    return f"{type(failure).__name__}: {failure}"
