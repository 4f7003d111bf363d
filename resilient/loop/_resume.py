"""Finding the checkpoint to resume from and reading this rank's part of it.

Rank 0 alone scans the directories and verifies, then broadcasts its choice: every rank must
resume from the same checkpoint, and a listing of a shared filesystem can differ between nodes
for a moment. The candidate is verified in full (checksums) as it is read, so a checkpoint is
read once, never twice; when the newest fails, the next older one is tried, with a warning that
names the bad one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, Manifest, UntrustedCheckpointError, load_files, verify
from ..coordination._dist import DistInfo, broadcast_object
from ._state import STATE_FILE, rank_file


@dataclass(frozen=True)
class Restored:
    """The parts of a checkpoint one rank needs."""

    path: Path
    manifest: Manifest
    state: dict[str, Any]
    own: dict[str, Any]


def _read(path: Path, manifest: Manifest, rank: int, weights_only: bool) -> Restored:
    files = load_files(path, [STATE_FILE, rank_file(rank)], weights_only=weights_only)
    return Restored(path, manifest, files[STATE_FILE], files[rank_file(rank)])


def _choose(found: Iterable[tuple[Path, Manifest]], weights_only: bool) -> Restored | None:
    for path, manifest in found:
        if manifest.kind != "full":
            continue
        try:
            restored = _read(path, manifest, 0, weights_only)
            verify(path, full=True)  # the other ranks' files: small, and must be sound too
            return restored
        except UntrustedCheckpointError:
            raise  # sound but unsafe to load: the user must decide, not a fallback
        except CheckpointError as error:
            warnings.warn(f"skipping checkpoint {path}: {error}; trying the next older one", stacklevel=4)
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
