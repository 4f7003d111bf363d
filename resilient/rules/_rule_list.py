"""The rules a run gets from its ``checkpoint`` argument, as ``Run``, job files and submission read it."""

from __future__ import annotations

from collections.abc import Sequence

from resilient.rules.model_checkpoint import ModelCheckpoint


def rule_list(checkpoint: ModelCheckpoint | Sequence[ModelCheckpoint] | None) -> list[ModelCheckpoint]:
    """One rule or a list of them; None gives Lightning's default, an empty list none at all."""
    if checkpoint is None:
        return [ModelCheckpoint()]  # Lightning's default: every epoch, keep the latest
    rules = [checkpoint] if isinstance(checkpoint, ModelCheckpoint) else checkpoint
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
        raise TypeError(f"checkpoint must be a ModelCheckpoint or a list of them, not {type(checkpoint).__name__}")
    for index, rule in enumerate(rules):
        if not isinstance(rule, ModelCheckpoint):
            raise TypeError(f"checkpoint[{index}] must be a ModelCheckpoint, not {type(rule).__name__}")
    return list(rules)
