"""Which tracked state is written by whom, and how it goes back into the objects.

Replicated state (model, optimizers, schedulers, gradient scalers) is identical on every rank
under data parallelism, so only rank 0 serializes it: the write costs one copy whatever the
world size. Everything else a user tracks (samplers, data loaders, their own objects) may differ
per rank and is kept once per rank, next to that rank's RNG states, in a small file of its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

STATE_FILE = "state.pt"
RESERVED_NAMES = frozenset({"resilient"})


def rank_file(rank: int) -> str:
    """The payload file holding one rank's own state."""
    return f"rank-{rank:05d}.pt"


def _replicated_types() -> tuple[type, ...]:
    types: list[type] = [torch.nn.Module, torch.optim.Optimizer]
    for owner, name in (
        (torch.optim.lr_scheduler, "LRScheduler"),
        (torch.optim.lr_scheduler, "ReduceLROnPlateau"),
        (getattr(torch, "amp", None), "GradScaler"),
        (torch.cuda.amp, "GradScaler"),
    ):
        found = getattr(owner, name, None)
        if isinstance(found, type):
            types.append(found)
    return tuple(types)


_REPLICATED = _replicated_types()


def is_replicated(obj: object) -> bool:
    """True for state that data parallelism keeps identical on every rank."""
    return isinstance(obj, _REPLICATED)


def check_trackable(name: str, obj: object) -> None:
    """Refuse, before anything is restored or written, what could not be checkpointed."""
    if name in RESERVED_NAMES:
        raise ValueError(f"track(): the name {name!r} is reserved by resilient; pick another name")
    for method in ("state_dict", "load_state_dict"):
        if not callable(getattr(obj, method, None)):
            raise TypeError(
                f"track(): {name}={type(obj).__name__!s} has no {method}() method; only objects with "
                "state_dict()/load_state_dict() (modules, optimizers, schedulers, samplers...) can be tracked"
            )


def check_new_objects(objects: Mapping[str, object], tracked: Mapping[str, object]) -> None:
    """`track(**objects)`'s checks: at least one, each trackable, none tracked already."""
    if not objects:
        raise TypeError("track() needs at least one object, e.g. run.track(model=model, optimizer=opt)")
    for name, obj in objects.items():
        check_trackable(name, obj)
        if name in tracked:
            raise ValueError(f"track(): {name!r} is already tracked")


def split_states(tracked: Mapping[str, Any], *, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(replicated states, this rank's own states); replicated ones are only read on rank 0."""
    replicated: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for name, obj in tracked.items():
        if is_replicated(obj):
            if rank == 0:
                replicated[name] = obj.state_dict()
        else:
            own[name] = obj.state_dict()
    return replicated, own


def module_states(tracked: Mapping[str, Any]) -> dict[str, Any]:
    """The model weights alone, for `save_weights_only` checkpoints."""
    return {name: obj.state_dict() for name, obj in tracked.items() if isinstance(obj, torch.nn.Module)}


def restore_objects(
    objects: Mapping[str, Any], replicated: Mapping[str, Any], own: Mapping[str, Any], source: str
) -> None:
    """Load each object's saved state; an object the checkpoint lacks starts fresh, with a warning."""
    for name, obj in objects.items():
        states = replicated if is_replicated(obj) else own
        if name not in states:
            warnings.warn(
                f"tracked object {name!r} is not in checkpoint {source}; it keeps its fresh state",
                stacklevel=3,
            )
            continue
        obj.load_state_dict(states[name])
