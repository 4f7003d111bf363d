"""A rule's identity across restarts, as stored in checkpoints, and matching it without parsing.

A rule's identity is a plain JSON mapping (``{"kind": "ModelCheckpoint", "monitor": ...}``):
the manifest stores it as an object and a checkpoint keys each rule's bookkeeping by its
canonical JSON text, so nothing ever parses it back. Checkpoints written before that stored
the identity as a Python repr (``ModelCheckpoint{'monitor': ...}``); that form is rebuilt here
from the mapping, never parsed, so that old checkpoints still match their rules on resume.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

# What ModelCheckpoint's identity holds; the repr form listed the same, in this order, but its
# interval as a timedelta.
_FIELDS = ("kind", "monitor", "mode", "every_n_train_steps", "every_n_epochs", "train_time_interval_s", "filename")


def identity_key(identity: Mapping[str, Any]) -> str:
    """The canonical text of an identity: the key of a rule's bookkeeping in a checkpoint."""
    return json.dumps(dict(identity), sort_keys=True)


def legacy_key(identity: Mapping[str, Any]) -> str | None:
    """The repr form older checkpoints stored for this identity; None for a kind that had none."""
    if set(identity) != set(_FIELDS):
        return None
    fields: dict[str, Any] = {name: identity[name] for name in _FIELDS[1:]}
    seconds = fields.pop("train_time_interval_s")
    fields["train_time_interval"] = None if seconds is None else timedelta(seconds=seconds)
    fields["filename"] = fields.pop("filename")  # the repr listed it last
    return f"{identity['kind']}{fields!r}"


def same_rule(stored: str | Mapping[str, Any], identity: Mapping[str, Any]) -> bool:
    """Whether a manifest's `rule` (a mapping, or an older checkpoint's repr) names this identity."""
    if isinstance(stored, Mapping):
        return dict(stored) == dict(identity)
    return stored == legacy_key(identity)


def saved_state(saved: Mapping[str, Any], identity: Mapping[str, Any]) -> Any | None:
    """A rule's bookkeeping in a checkpoint's `rules` (keyed either way); None if it has none."""
    for key in (identity_key(identity), legacy_key(identity)):
        if key is not None and key in saved:
            return saved[key]
    return None
