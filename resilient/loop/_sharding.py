"""Which tracked objects are sharded (FSDP2, DTensor), and their state as DCP saves and loads it.

A module whose parameters are DTensors (``fully_shard``) has no whole state on any rank, nor has
its optimizer: both go through `torch.distributed.checkpoint` on every rank (see
`checkpoint/_sharded.py`) instead of rank 0's ``state.pt``. Their state dicts come from torch's
``get_model_state_dict`` / ``get_optimizer_state_dict``, which key an optimizer's state by
parameter names rather than by position, so DCP can reshard it; that is why an optimizer is
paired with the tracked module that owns its parameters. Everything else stays as it was:
replicated state on rank 0, per-rank state in each rank's own file.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch.distributed.checkpoint.metadata import Metadata

    from ..checkpoint import FileEntry


def _dtensor() -> type | None:
    """DTensor's class, if anything made one: its module is then loaded (FSDP2 loads it), and
    looking no further costs a run without sharded state no import at all."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def _reshard(tracked: Mapping[str, Any]) -> None:
    """Put FSDP2 modules' sharded parameters back in place. After a forward pass without
    backward (an evaluation under ``no_grad``), the root module keeps its parameters unsharded:
    they are then neither DTensors nor the optimizer's parameters, and torch's state-dict
    functions fail on them; ``reshard()`` is FSDP's own public way back (the next forward
    gathers them again)."""
    fsdp_module = getattr(sys.modules.get("torch.distributed.fsdp"), "FSDPModule", None)
    if fsdp_module is None:
        return
    for obj in tracked.values():
        if isinstance(obj, torch.nn.Module):
            for module in obj.modules():
                if isinstance(module, fsdp_module):
                    module.reshard()


def _parameters(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        return list(obj.parameters())
    if isinstance(obj, torch.optim.Optimizer):
        return [parameter for group in obj.param_groups for parameter in group["params"]]
    return []


def sharded_names(tracked: Mapping[str, Any]) -> frozenset[str]:
    """The tracked objects whose state is sharded (every rank: FSDP modules are resharded);
    refuses an optimizer of sharded parameters whose module is not tracked (its state could
    not be keyed by parameter names)."""
    dtensor = _dtensor()
    if dtensor is None:
        return frozenset()
    _reshard(tracked)
    names = frozenset(name for name, obj in tracked.items()
                      if any(isinstance(parameter, dtensor) for parameter in _parameters(obj)))
    for name in names:
        if isinstance(tracked[name], torch.optim.Optimizer):
            _owner(name, tracked, names)
    return names


def _owner(name: str, tracked: Mapping[str, Any], sharded: frozenset[str]) -> torch.nn.Module:
    first = _parameters(tracked[name])[0]
    for other in sorted(sharded):
        obj = tracked[other]
        if isinstance(obj, torch.nn.Module) and any(parameter is first for parameter in obj.parameters()):
            return obj
    raise ValueError(f"track(): optimizer {name!r} holds sharded (FSDP) parameters of no tracked module; "
                     "track the model too, e.g. run.track(model=model, optimizer=optimizer)")


def sharded_states(tracked: Mapping[str, Any], sharded: frozenset[str],
                   only: Collection[str] | None = None) -> dict[str, Any]:
    """The DCP state dicts of the sharded objects (or of those `only`), by tracked name; every
    rank calls it, together (torch's state-dict functions may talk to the other ranks)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    _reshard(tracked)
    states: dict[str, Any] = {}
    for name in sorted(sharded if only is None else only):
        obj = tracked[name]
        if isinstance(obj, torch.nn.Module):
            states[name] = get_model_state_dict(obj)
        else:
            states[name] = get_optimizer_state_dict(_owner(name, tracked, sharded), obj)
    return states


def restore_sharded(objects: Mapping[str, Any], tracked: Mapping[str, Any], sharded: frozenset[str],
                    saved: Collection[str], path: Path, files: Mapping[str, FileEntry], *, weights_only: bool) -> None:
    """Load the sharded ones of `objects` from the checkpoint at `path`, in place, resharded to
    this run's layout (every rank, together: a `track` call after the one that resumed); one the
    checkpoint lacks keeps its fresh state, with a warning, like any tracked object.
    `weights_only` as the run loads its other files; `files`: the manifest's, the only ones DCP
    may read. The checkpoint is the one resumed from, verified already."""
    from ..checkpoint import shard_metadata

    names = _saved_names(objects, sharded, saved, path)
    if names:
        metadata = shard_metadata(path, files, weights_only=weights_only)
        _read_into(names, tracked, sharded, path, metadata, weights_only=weights_only)


def _saved_names(objects: Mapping[str, Any], sharded: frozenset[str], saved: Collection[str], path: Path) -> list[str]:
    """The sharded ones of `objects` that the checkpoint holds; a warning for each it lacks."""
    names = sorted(name for name in objects if name in sharded)
    for name in names:
        if name not in saved:
            warnings.warn(f"tracked object {name!r} is not in checkpoint {path} as sharded state; "
                          "it keeps its fresh state", stacklevel=4)
    return [name for name in names if name in saved]


def _read_into(names: list[str], tracked: Mapping[str, Any], sharded: frozenset[str], path: Path,
               metadata: Metadata | None, *, weights_only: bool, verify: Mapping[str, FileEntry] | None = None,
               refusal: Exception | None = None) -> None:
    """Read the sharded objects `names` from `path` through DCP (every rank, together) and set
    them; `verify` and `refusal` as for `read_shards`. Any failure but damage, an untrusted
    value or a refusal means the checkpoint does not fit the tracked objects (another model):
    that is refused, never answered by silently resuming from an older checkpoint, which would
    not fit either and would throw away the newer one's progress."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    from ..checkpoint import (
        CandidateRefused,
        CheckpointError,
        CorruptCheckpointError,
        UntrustedCheckpointError,
        read_shards,
    )

    states = sharded_states(tracked, sharded, only=names)
    try:
        read_shards(states, path, metadata, weights_only=weights_only, verify=verify, refusal=refusal)
    except (UntrustedCheckpointError, CorruptCheckpointError, CandidateRefused):
        raise  # unsafe to load (the user decides), damaged or refused (the caller falls back)
    except CheckpointError as error:
        raise CheckpointError(
            f"checkpoint {path} passed verification but does not fit the tracked {', '.join(names)} (was it "
            f"saved from another model?): {error}. An older checkpoint is not used in its place: resume "
            "with the model it was saved from, or start a new run_dir") from None
    for name in names:
        obj = tracked[name]
        if isinstance(obj, torch.nn.Module):
            set_model_state_dict(obj, states[name])
        else:
            set_optimizer_state_dict(_owner(name, tracked, sharded), obj, states[name])


class ShardedResume:
    """The sharded `objects` of the `track` call that resumes, loaded while the checkpoint to resume
    from is chosen (`loop/_resume.py`), so that each rank verifies its shard files as DCP reads
    them, reading each byte once, rather than hashing them first and reading them again.

    Every rank goes through DCP's load for every candidate, whatever it found of its own part:
    its refusal travels in DCP's exchange of load plans (`CandidateRefused`), so choosing a
    sharded checkpoint costs no exchange of verdicts beyond DCP's own. Damage found while
    reading is found after tensors were loaded: the objects loaded from a damaged checkpoint
    must be loaded over, whole, from the older checkpoint the resume falls back to. `load`
    refuses an older checkpoint that lacks one of them, and `check_whole` a resume that found
    no older valid checkpoint: training on half-loaded state would go unnoticed, so the run
    stops, saying which checkpoint to move aside.
    """

    def __init__(self, objects: Mapping[str, Any], tracked: Mapping[str, Any], sharded: frozenset[str], *,
                 weights_only: bool) -> None:
        self._objects, self._tracked, self._sharded = objects, tracked, sharded
        self._weights_only = weights_only
        self._overwritten: tuple[Path, frozenset[str]] | None = None  # from a damaged checkpoint: which, and what

    def load(self, path: Path, files: Mapping[str, FileEntry], saved: Collection[str], verify: Collection[str],
             refusal: Exception | None = None) -> None:
        """Load the objects from the checkpoint at `path` (every rank, together), verifying the shard
        files `verify`; `saved`: the names the checkpoint holds as sharded state. A rank that found
        its own part of the checkpoint unusable passes what it found as `refusal` (`files` and
        `saved` then go unused): every rank then raises `CandidateRefused`, nothing loaded."""
        from ..checkpoint import SHARDS_METADATA, CheckpointError, CorruptCheckpointError, prefetch, shard_metadata

        metadata = None
        names: list[str] = []
        lacking = ""  # what an older checkpoint lacks of what a damaged one overwrote: raised after DCP's exchange
        if refusal is None:
            names = _saved_names(self._objects, self._sharded, saved, path)
            if self._overwritten is not None and not self._overwritten[1] <= set(names):
                lacking, names = ", ".join(sorted(self._overwritten[1] - set(names))), []
            try:  # read even when nothing loads from it: no rank's share checks it, every loading rank does
                if names or SHARDS_METADATA in files:
                    metadata = shard_metadata(path, files, weights_only=self._weights_only)
            except CheckpointError as error:  # told in DCP's exchange, like a refusal of the rank's own files
                refusal, names = error, []
        if names:  # its own shards, which it reads unless the world size changed
            prefetch(path, verify)  # after the small files: they would queue behind the shards
        try:
            _read_into(names, self._tracked, self._sharded, path, metadata, weights_only=self._weights_only,
                       verify={} if lacking else {name: files[name] for name in verify}, refusal=refusal)
        except CorruptCheckpointError:
            if names:  # loaded over, in part; else nothing was, and what was overwritten before still is
                self._overwritten = (path, frozenset(names))
            raise
        if lacking:
            raise self._half_loaded(f"the older checkpoint {path} holds no sharded {lacking}")
        self._overwritten = None

    def check_whole(self) -> None:
        """Refuse to go on when the objects were last loaded, in part, from a damaged checkpoint."""
        if self._overwritten is not None:
            raise self._half_loaded("no older valid checkpoint was found")

    def _half_loaded(self, why: str) -> RuntimeError:
        assert self._overwritten is not None
        damaged, names = self._overwritten
        return RuntimeError(
            f"the sharded {', '.join(sorted(names))} were loaded in part from checkpoint {damaged} before its damage "
            f"was found, and {why} to load over them: they are neither fresh nor restored, so the run stops. Move "
            f"{damaged} aside (or remove it) and start again to begin afresh from the older checkpoints, if any")
