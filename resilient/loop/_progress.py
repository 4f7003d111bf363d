"""Where the loop is: the counters, metrics and phase a checkpoint records and a resume restores.

A checkpoint is taken at one of three points of an epoch (`Phase`); the phase is stored with the
counters so that a resumed loop knows whether the epoch's batches, or the whole epoch, were done.
The phase strings are on disk in every checkpoint and must not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..rules import CheckpointRule, identity_key
from ..rundir import Vocabulary
from ._saving import Snapshot

AUTOMATIC_METRICS = ("epoch", "step")


class Phase(Vocabulary):
    """The boundary a checkpoint was taken at."""

    STEP = "step"  # after a batch: the optimizer step is complete
    TRAIN_END = "train_end"  # the epoch's batches are done, the rest of the epoch (validation) is not
    EPOCH_END = "epoch_end"  # the whole epoch is done: a resume starts the next one


@dataclass
class Progress:
    """The loop's counters and logged metrics (tensors kept as they are until a save reads them)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of this epoch consumed
    metrics: dict[str, Any] = field(default_factory=dict)
    epoch_rng: dict[str, Any] | None = None  # the RNG this epoch's iterator was made with

    def log(self, name: str, value: float | torch.Tensor) -> None:
        """Keep a metric; a tensor is kept as it is (detached), read only when a rule needs it."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"log(): name must be a non-empty string, not {name!r}")
        if name in AUTOMATIC_METRICS:
            raise ValueError(f"log(): {name!r} is provided automatically; log it under another name")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"log({name!r}): a tensor metric must hold one value, not shape {tuple(value.shape)}")
            value = value.detach()
        elif isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise TypeError(f"log({name!r}): value must be a number or a one-element tensor, not {value!r}")
        self.metrics[name] = value

    def candidates(self) -> dict[str, float | int]:
        """What a rule may monitor or name files by: the logged metrics, the epoch and the step."""
        metrics: dict[str, float | int] = {name: float(value) for name, value in self.metrics.items()}
        metrics["epoch"] = self.epoch
        metrics["step"] = self.step
        return metrics

    def snapshot(self, rules: Iterable[CheckpointRule], phase: Phase) -> Snapshot:
        """What a checkpoint taken now records beyond the tracked objects."""
        return Snapshot(
            step=self.step,
            epoch=self.epoch,
            loop={"step": self.step, "epoch": self.epoch, "batch": self.batch, "phase": phase.value},
            metrics={name: float(value) for name, value in self.metrics.items()},
            rules={identity_key(rule.identity): rule.state_dict() for rule in rules},
            epoch_rng=self.epoch_rng if self.batch else None,
        )
