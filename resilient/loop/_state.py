"""Which tracked state is written by whom, and how it goes back into the objects.

Replicated state (model, optimizers, schedulers, gradient scalers) is identical on every rank
under data parallelism, so only rank 0 serializes it: the write costs one copy whatever the
world size. Everything else a user tracks (samplers, data loaders, their own objects) may differ
per rank and is kept once per rank, next to that rank's RNG states, in a small file of its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
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


def split_states(tracked: Mapping[str, Any], *, rank: int, sharded: Collection[str] = ()
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(replicated states, this rank's own states), leaving out the `sharded` objects (written
    by every rank, see `_sharding`); replicated ones are only read on rank 0."""
    replicated: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for name, obj in tracked.items():
        if name in sharded:
            continue
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
    objects: Mapping[str, Any], replicated: Mapping[str, Any], own: Mapping[str, Any], source: str,
    release: Callable[[Iterable[torch.Tensor]], None],
) -> None:
    """Load each object's saved state; an object the checkpoint lacks starts fresh, with a warning.

    `release` gives back the memory of saved tensors a module has copied (see `_load_module`).
    """
    for name, obj in objects.items():
        states = replicated if is_replicated(obj) else own
        if name not in states:
            warnings.warn(
                f"tracked object {name!r} is not in checkpoint {source}; it keeps its fresh state",
                stacklevel=3,
            )
            continue
        if isinstance(obj, torch.nn.Module):
            _load_module(obj, states[name], release)
        else:
            obj.load_state_dict(states[name])


def _load_module(module: torch.nn.Module, state: Mapping[str, Any], release: Callable[[Iterable[torch.Tensor]], None]
                 ) -> None:
    """`module.load_state_dict(state)`, releasing each submodule's saved tensors as soon as it has copied them.

    `load_state_dict` copies into the existing parameters, so the saved tensors are dead weight
    once copied; released submodule by submodule (its load-state-dict post-hook, which
    `load_state_dict` calls for each submodule in turn), the extra memory of a resume is at
    most one submodule's tensors instead of the whole model. A saved tensor the module kept
    (``assign``, or a custom `_load_from_state_dict`) is not released.
    """
    by_owner: dict[str, list[torch.Tensor]] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            by_owner.setdefault(key.rpartition(".")[0], []).append(value)
    prefixes: dict[int, list[str]] = {}
    for prefix, submodule in module.named_modules(remove_duplicate=False):
        prefixes.setdefault(id(submodule), []).append(prefix)

    def release_copied(submodule: torch.nn.Module, _incompatible: object) -> None:
        kept = {t.untyped_storage().data_ptr()
                for t in (*submodule.parameters(recurse=False), *submodule.buffers(recurse=False))}
        release(saved for prefix in prefixes.get(id(submodule), ()) for saved in by_owner.get(prefix, ())
                if saved.untyped_storage().data_ptr() not in kept)

    hooks = [submodule.register_load_state_dict_post_hook(release_copied) for submodule in module.modules()]
    try:
        module.load_state_dict(state)
    finally:
        for hook in hooks:
            hook.remove()
