"""Finding the checkpoint to resume from and reading this rank's part of it.

Rank 0 alone scans the directories and verifies, then broadcasts its choice: every rank must
resume from the same checkpoint, and a listing of a shared filesystem can differ between nodes
for a moment. The candidate is verified in full (checksums) as it is read, so a checkpoint is
read once, never twice; when the newest fails, the next older one is tried, with a warning that
names the bad one. What the loop carries on from is returned as a record (`Resumed`): the loop
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

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from ..checkpoint import (
    CheckpointError,
    CheckpointKind,
    Manifest,
    MappedPayloads,
    UntrustedCheckpointError,
    load_files,
    newest_checkpoints,
    recover_directory,
    verify,
)
from ..coordination import DistInfo, broadcast_object
from ..rundir import Event
from ._journal import Journal
from ._progress import Phase, Progress
from ._rng import PendingRng, seeded_rng
from ._state import STATE_FILE, rank_file


@dataclass(frozen=True)
class Restored:
    """The parts of a checkpoint one rank needs, and the memory maps their tensors lie in."""

    path: Path
    manifest: Manifest
    state: dict[str, Any]
    own: dict[str, Any]
    pages: MappedPayloads


def _read(path: Path, manifest: Manifest, rank: int, weights_only: bool, *, check_others: bool = False) -> Restored:
    """`rank`'s part of the checkpoint: its own file, or on a rank the checkpoint had not, that of
    rank ``rank % saved world size`` (see `resume`)."""
    pages = MappedPayloads()
    own = rank_file(rank % manifest.world_size)
    files = load_files(path, [STATE_FILE, own], weights_only=weights_only, check_others=check_others, pages=pages)
    return Restored(path, manifest, files[STATE_FILE], files[own], pages)


def _choose(found: Iterable[tuple[Path, Manifest]], weights_only: bool) -> Restored | None:
    for path, manifest in found:
        if manifest.kind != CheckpointKind.FULL:
            continue
        try:
            return _read(path, manifest, 0, weights_only, check_others=True)  # the other ranks' files too
        except UntrustedCheckpointError:
            raise  # sound but unsafe to load: the user must decide, not a fallback
        except CheckpointError as error:
            warnings.warn(f"skipping checkpoint {path}: {error}; trying the next older one", stacklevel=5)
    return None


def restore_latest(
    found: Iterable[tuple[Path, Manifest]], dist: DistInfo, *, weights_only: bool
) -> Restored | None:
    """The newest valid full checkpoint among rank 0's `found` (newest first), read on every rank."""
    chosen = _choose(found, weights_only) if dist.rank == 0 else None
    path = broadcast_object(str(chosen.path) if chosen else None, dist)
    if path is None:
        return None
    return chosen or _read(Path(path), verify(Path(path)), dist.rank, weights_only)


@dataclass(frozen=True)
class Resumed:
    """Where a restored run carries on: its checkpoint, counters and metrics, and pending RNG."""

    restored: Restored
    progress: Progress
    rng: PendingRng
    train_end_saved_epoch: int | None  # the epoch whose batches' end was saved: not to be saved again


def resume(dirs: Iterable[Path], dist: DistInfo, journal: Journal, *, enabled: bool, weights_only: bool
           ) -> Resumed | None:
    """Tidy `dirs` (rank 0), then, if `enabled`, restore from their newest valid checkpoint.

    Only as many checkpoints are verified as it takes to find it, newest first: the older ones,
    however many, are ordered by their manifest's first line and never verified.
    """
    dirs = list(dirs)
    if dist.rank == 0:
        for directory in dirs:
            recover_directory(directory)
    if not enabled:
        return None
    restored = restore_latest(newest_checkpoints(dirs) if dist.rank == 0 else (), dist, weights_only=weights_only)
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
