"""Finding the checkpoint to resume from and reading this rank's part of it.

Rank 0 alone scans the directories and names the candidates, newest first: every rank must
resume from the same checkpoint, and a listing of a shared filesystem can differ between nodes
for a moment. Every rank verifies (checksums) what it reads as it reads it, and a share of the
files no rank reads, so a checkpoint is read once, never twice, and a large sharded one is
verified by all ranks at once; when one rank finds the candidate damaged, every rank moves on to
the next older one, with a warning that names the bad one. Sharded state is loaded while the
checkpoint is chosen, each rank verifying its shard files as DCP reads them (`ShardedResume`):
damage found then falls back alike, the older checkpoint loading over what was loaded. What the
loop carries on from is returned as a record (`Resumed`): the loop
assigns it, rather than this module reaching into the loop.

A job may come back on another number of ranks (a requeue onto fewer or more nodes). Replicated
and sharded state do not depend on it (DCP reshards); per-rank state does, and is mapped by one
rule: rank r takes saved rank ``r % saved world size``'s file. Its data position is the same on
every rank (a `ResumableSampler` deals the rest of the epoch out among the new ranks, so no
sample is skipped or repeated); a rank that existed continues its RNG streams, and a new rank
seeds its own from the checkpoint, the step and its rank, the same at every try. Bitwise
equality with an uninterrupted run is then impossible (the ranks draw different batches); what
holds is that every sample of the epoch is seen once and the model and optimizer are exactly
as saved.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from ..checkpoint import (
    SHARDS_METADATA,
    CandidateRefused,
    CheckpointError,
    CheckpointKind,
    CorruptCheckpointError,
    Manifest,
    MappedPayloads,
    UntrustedCheckpointError,
    newest_checkpoints,
    open_payloads,
    recover_directory,
    shard_writer,
)
from ..coordination import DistInfo, broadcast_object, gather_to_main
from ..rundir import Event
from ._journal import Journal
from ._progress import Phase, Progress
from ._rng import PendingRng, seeded_rng
from ._state import STATE_FILE, rank_file

if TYPE_CHECKING:
    from ._sharding import ShardedResume


@dataclass(frozen=True)
class Restored:
    """The parts of a checkpoint one rank needs, and the memory maps their tensors lie in."""

    path: Path
    manifest: Manifest
    state: dict[str, Any]
    own: dict[str, Any]
    pages: MappedPayloads


def _share(manifest: Manifest, dist: DistInfo, *, defer_shards: bool) -> tuple[list[str], list[str]]:
    """The files this rank verifies beyond those it loads, as (checked now, deferred to its sharded
    load). Every file no rank loads (the shards of a sharded state, the files of saved ranks
    beyond this world size) is shared out among the ranks, so that each byte is hashed once and
    N ranks verify a large sharded checkpoint N times faster than rank 0 alone. A rank takes the
    shards it wrote, which its DCP load then reads (and, when the resume loads sharded state
    (`defer_shards`), verifies as it reads them: `ShardedResume`, which also has every rank
    check DCP's small metadata file as it reads it); the rest are dealt out in turn."""
    loaded = {STATE_FILE} | {rank_file(rank % manifest.world_size) for rank in range(dist.world_size)}
    if defer_shards:
        loaded.add(SHARDS_METADATA)
    others = sorted(name for name in manifest.files if name not in loaded)
    writers = {name: shard_writer(name) for name in others}
    dealt = [name for name in others if writers[name] is None or writers[name] >= dist.world_size]
    share = [name for name in others if writers[name] == dist.rank] + dealt[dist.rank :: dist.world_size]
    deferred = [name for name in share if defer_shards and writers[name] is not None]
    return [name for name in share if name not in deferred], deferred


def _try(path: Path, dist: DistInfo, weights_only: bool, *, defer_shards: bool
         ) -> tuple[Restored | None, list[str], Exception | None]:
    """This rank's part of `path`, read and its share verified, but for the shard files of its
    share when `defer_shards` (returned: its sharded load verifies them); or what is wrong with it.

    Its part is its own file, or on a rank the checkpoint had not, that of rank
    ``rank % saved world size`` (see `resume`), beside ``state.pt``; all under one read of the
    manifest. Each file's size and checksum is checked by the one rank that reads it.
    """
    try:
        pages = MappedPayloads()
        with open_payloads(path, weights_only=weights_only, pages=pages) as payloads:
            manifest = payloads.manifest
            checked, deferred = _share(manifest, dist, defer_shards=defer_shards)
            state, own = payloads.load(STATE_FILE), payloads.load(rank_file(dist.rank % manifest.world_size))
            payloads.check(checked)
        return Restored(path, manifest, state, own, pages), deferred, None
    except Exception as error:  # every rank must hear of it, or the others would wait for this one
        return None, [], error


def _portable(error: Exception | None) -> Exception | None:
    """`error` as it can travel to the other ranks: itself if it survives pickling, else its text."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _worst(errors: Iterable[Exception | None]) -> Exception | None:
    """What the ranks' errors make of a candidate: None (sound), a `CheckpointError` (damaged: try the
    next older), or an error to raise on every rank (sound but unsafe to load, or not a checkpoint
    problem at all)."""
    found = [error for error in errors if error is not None]
    fatal = [error for error in found if _is_fatal(error)]
    return (fatal or found or [None])[0]


def _is_fatal(error: Exception) -> bool:
    return isinstance(error, UntrustedCheckpointError) or not isinstance(error, CheckpointError)


def restore_latest(
    found: Iterable[tuple[Path, Manifest]], dist: DistInfo, *, weights_only: bool, sharded: ShardedResume | None = None
) -> Restored | None:
    """The newest valid full checkpoint among rank 0's `found` (newest first), read on every rank.

    Rank 0 names each candidate in turn; every rank reads its part and verifies its share of the
    rest (`_share`), and every rank hears every rank's verdict: a checkpoint is chosen only when
    all its files are sound, and a damaged one is skipped on every rank, with a warning naming
    it. With `sharded`, the tracked sharded objects are loaded from the candidate too, each rank
    verifying its shard files as it reads them, and the verdicts travel in DCP's own exchange of
    load plans rather than in two more collectives: a rank's refusal stops every rank before
    any reads, and damage found while reading reaches every rank after; either way they go on
    to the next older candidate alike.
    """
    candidates = (path for path, manifest in found if manifest.kind == CheckpointKind.FULL)
    while True:
        path = broadcast_object(str(next(candidates, "")) if dist.rank == 0 else None, dist)
        if not path:
            if sharded is not None:
                sharded.check_whole()
            return None
        restored, deferred, error = _try(Path(path), dist, weights_only, defer_shards=sharded is not None)
        if sharded is None:
            verdicts = gather_to_main(_portable(error), dist)
            worst = broadcast_object(_worst(verdicts) if verdicts is not None else None, dist)
        else:  # the verdicts travel in DCP's own exchange of load plans
            try:
                if restored is None:
                    sharded.load(Path(path), {}, (), (), refusal=_portable(error))
                else:
                    sharded.load(restored.path, restored.manifest.files, restored.state.get("sharded", ()), deferred)
                worst = None
            except CandidateRefused as refused:  # nothing was loaded
                worst = _worst(refused.errors)
            except CorruptCheckpointError as damage:  # the same on every rank: DCP gathered it
                worst = damage
        if worst is None:
            assert restored is not None
            return restored
        if _is_fatal(worst):  # sound but unsafe to load (the user must decide), or not the checkpoint's fault
            raise error if error is not None and _is_fatal(error) else worst
        if dist.rank == 0:
            warnings.warn(f"skipping checkpoint {path}: {worst}; trying the next older one", stacklevel=4)


@dataclass(frozen=True)
class Resumed:
    """Where a restored run carries on: its checkpoint, counters and metrics, and pending RNG."""

    restored: Restored
    progress: Progress
    rng: PendingRng
    train_end_saved_epoch: int | None  # the epoch whose batches' end was saved: not to be saved again


def resume(dirs: Iterable[Path], dist: DistInfo, journal: Journal, *, enabled: bool, weights_only: bool,
           sharded: ShardedResume | None = None) -> Resumed | None:
    """Tidy `dirs` (rank 0), then, if `enabled`, restore from their newest valid checkpoint, the
    `sharded` objects included (see `restore_latest`).

    Only as many checkpoints are verified as it takes to find it, newest first: the older ones,
    however many, are ordered by their manifest's first line and never verified.
    """
    dirs = list(dirs)
    if dist.rank == 0:
        for directory in dirs:
            recover_directory(directory)
    if not enabled:
        return None
    restored = restore_latest(newest_checkpoints(dirs) if dist.rank == 0 else (), dist, weights_only=weights_only,
                              sharded=sharded)
    if restored is None:
        return None
    loop = restored.state["loop"]
    progress = Progress(step=loop["step"], epoch=loop["epoch"], batch=loop["batch"],
                        metrics=dict(restored.state["metrics"]))
    phase = Phase(loop["phase"])
    if phase is Phase.EPOCH_END:
        progress.epoch, progress.batch = progress.epoch + 1, 0
    saved_world_size = restored.manifest.world_size
    rng = PendingRng(restored.own["rng"], restored.own["epoch_rng"])
    if dist.rank >= saved_world_size:  # a rank the checkpoint had not: its own stream, the same at every try
        seed = xxhash.xxh3_64_intdigest(f"{restored.path.name}:{progress.step}:{dist.rank}".encode())
        rng = PendingRng(seeded_rng(seed), restored.own["epoch_rng"])
    journal.record(Event.RESUMED, checkpoint=str(restored.path), step=progress.step, epoch=progress.epoch,
                   world_size=dist.world_size, saved_world_size=saved_world_size)
    return Resumed(restored, progress, rng, progress.epoch if phase is Phase.TRAIN_END else None)
