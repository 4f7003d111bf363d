"""Finding the checkpoint to resume from and reading this rank's part of it.

Rank 0 alone scans the directories and verifies, then broadcasts its choice: every rank must
resume from the same checkpoint, and a listing of a shared filesystem can differ between nodes
for a moment. The candidate is verified in full (checksums) as it is read, so a checkpoint is
read once, never twice; when the newest fails, the next older one is tried, with a warning that
names the bad one. What the loop carries on from is returned as a record (`Resumed`): the loop
assigns it, rather than this module reaching into the loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from ._rng import PendingRng
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
    pages = MappedPayloads()
    files = load_files(path, [STATE_FILE, rank_file(rank)], weights_only=weights_only, check_others=check_others,
                       pages=pages)
    return Restored(path, manifest, files[STATE_FILE], files[rank_file(rank)], pages)


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
    found = broadcast_object((str(chosen.path), chosen.manifest.world_size) if chosen else None, dist)
    if found is None:
        return None
    path, saved_world_size = found
    if saved_world_size != dist.world_size:
        raise ValueError(
            f"checkpoint {path} was written by {saved_world_size} ranks but this run has "
            f"{dist.world_size}; per-rank state (RNG, data position) cannot be mapped onto a different "
            "world size: resume with the same number of ranks, or start fresh with resume=False"
        )
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
    rng = PendingRng(restored.own["rng"], restored.own["epoch_rng"])
    journal.record(Event.RESUMED, checkpoint=str(restored.path), step=progress.step, epoch=progress.epoch)
    return Resumed(restored, progress, rng, progress.epoch if phase is Phase.TRAIN_END else None)
