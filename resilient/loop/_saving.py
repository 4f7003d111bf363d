"""Writing one checkpoint with every rank taking part.

All ranks enter together at the same step boundary. Each rank hands its own small state (RNG,
data position, per-rank objects) to rank 0, which serializes the replicated state once and
commits atomically; then rank 0 tells every rank whether the commit succeeded, so no rank runs
ahead of a checkpoint that may not exist, and a failed write raises on every rank instead of
leaving the others waiting in the next collective.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, CheckpointKind, Manifest, write_checkpoint
from ..coordination import DistInfo, broadcast_object, gather_to_main
from ..rundir import Vocabulary
from ._rng import capture_rng
from ._state import STATE_FILE, module_states, rank_file, split_states


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


def write_together(
    dist: DistInfo,
    tracked: Mapping[str, Any],
    snapshot: Callable[[], Snapshot],
    full: Sequence[tuple[Path, Any]],
    weights: Sequence[tuple[Path, Any]] = (),
) -> list[tuple[Path, Manifest]]:
    """Commit `full` (resumable) and `weights` (model only) targets; every rank must call this.

    Each target is a path and the rule its manifest names (see `write_checkpoint`).

    Returns what rank 0 committed, target by target (nothing on the other ranks).
    """
    snap = snapshot()
    replicated, own = split_states(tracked, rank=dist.rank) if full else ({}, {})
    gathered = (
        gather_to_main({"objects": own, "rng": capture_rng(), "epoch_rng": snap.epoch_rng}, dist) if full else None
    )
    failure: BaseException | None = None
    committed: list[tuple[Path, Manifest]] = []
    if dist.rank == 0:
        try:
            if full:
                assert gathered is not None
                files: dict[str, Any] = {
                    STATE_FILE: {"objects": replicated, "loop": snap.loop, "rules": snap.rules, "metrics": snap.metrics}
                }
                files.update({rank_file(rank): part for rank, part in enumerate(gathered)})
                manifests = write_checkpoint(
                    full, files, step=snap.step, epoch=snap.epoch, metrics=snap.metrics, world_size=dist.world_size
                )
                committed += zip((path for path, _ in full), manifests)
            if weights:
                manifests = write_checkpoint(
                    weights,
                    {STATE_FILE: {"objects": module_states(tracked)}},
                    step=snap.step,
                    epoch=snap.epoch,
                    metrics=snap.metrics,
                    world_size=dist.world_size,
                    kind=CheckpointKind.WEIGHTS,
                )
                committed += zip((path for path, _ in weights), manifests)
        except BaseException as error:  # re-raised below, after the other ranks have been told
            failure = error
    status = broadcast_object(None if failure is None else f"{type(failure).__name__}: {failure}", dist)
    if failure is not None:
        raise failure
    if status is not None:
        raise CheckpointError(f"rank 0 could not write the checkpoint: {status}")
    return committed
