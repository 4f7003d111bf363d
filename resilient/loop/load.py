"""`resilient.load_checkpoint`: read a checkpoint written by a Run, outside any Run."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import SHARDS_METADATA, CheckpointKind, open_payloads, shard_writer
from ._state import STATE_FILE, rank_file


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    rank: int = 0,
    weights_only: bool = True,
    map_location: str | torch.device = "cpu",
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Load a verified checkpoint as `{tracked name: state_dict, ..., "resilient": metadata}`.

    The result holds every replicated object (model, optimizers, schedulers) and the per-rank
    objects of `rank`, so `model.load_state_dict(ckpt["model"])` works for both full and
    `save_weights_only` checkpoints; `only` names the tracked objects wanted (the model alone
    needs no memory for its optimizer). Every byte is checked against the manifest's checksums
    first: a truncated or corrupt checkpoint raises `CheckpointError`, naming the file, instead
    of loading. `weights_only=False` allows arbitrary pickled objects: use it only for files you
    trust.

    Sharded objects (FSDP2, named in ``["resilient"]["sharded"]``) are read whole, in this one
    process and without a process group (through `torch.distributed.checkpoint.load` with
    ``no_dist=True``: see `resilient.checkpoint.read_whole_shards`), as plain tensors on
    `map_location`: the result needs the whole model's memory, and the model's state dict loads
    into an unsharded model of the same architecture. A sharded optimizer's state is keyed by
    parameter names, not positions (torch's ``get_optimizer_state_dict`` format): load it with
    ``torch.distributed.checkpoint.state_dict.set_optimizer_state_dict(model, optimizer, state)``,
    which also works on one process without a process group.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"load_checkpoint(path): path must be a file system path, not {path!r}")
    if not isinstance(weights_only, bool):
        raise TypeError(f"load_checkpoint(): weights_only must be True or False, not {weights_only!r}")
    if isinstance(only, str):
        raise TypeError(f"load_checkpoint(): only must be a collection of names, not the string {only!r}")
    directory = Path(path)
    with open_payloads(directory, weights_only=weights_only, map_location=map_location) as payloads:
        manifest = payloads.manifest
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < manifest.world_size:
            raise ValueError(f"load_checkpoint(): rank must be an int in [0, {manifest.world_size}), not {rank!r}")
        names = [STATE_FILE] if manifest.kind == CheckpointKind.WEIGHTS else [STATE_FILE, rank_file(rank)]
        files = {name: payloads.load(name) for name in names}
        state = files[STATE_FILE]
        result: dict[str, Any] = dict(state["objects"])
        meta: dict[str, Any] = {"step": manifest.step, "epoch": manifest.epoch, "metrics": dict(manifest.metrics),
                                "kind": manifest.kind, "world_size": manifest.world_size, "rule": manifest.rule}
        sharded: list[str] = []
        if manifest.kind == CheckpointKind.FULL:
            result.update(files[rank_file(rank)]["objects"])
            meta["loop"] = state["loop"]
            meta["rules"] = state["rules"]
            sharded = list(state.get("sharded", ()))
            meta["sharded"] = sharded
        wanted = _wanted(only, [*result, *sharded], directory)
        result = {name: value for name, value in result.items() if name in wanted}
        sharded = [name for name in sharded if name in wanted]
        # Every file is checked, once: a sharded state's by DCP's read of it below (its shards as they
        # are read, its metadata as it is read), or here when none of its objects is wanted.
        by_dcp = {name for name in manifest.files if shard_writer(name) is not None or name == SHARDS_METADATA}
        payloads.check(name for name in manifest.files if name not in files and not (sharded and name in by_dcp))
    if sharded:
        from ..checkpoint import read_whole_shards  # DCP: seconds to import, for sharded checkpoints only

        shards = {name: entry for name, entry in manifest.files.items() if shard_writer(name) is not None}
        result.update(read_whole_shards(directory, manifest.files, sharded, weights_only=weights_only,
                                        device=map_location, verify=shards))
    result["resilient"] = meta
    return result


def _wanted(only: Collection[str] | None, present: list[str], path: Path) -> set[str]:
    if only is None:
        return set(present)
    unknown = sorted(set(only) - set(present))
    if unknown:
        raise ValueError(f"load_checkpoint(): checkpoint {path} has no tracked object {unknown[0]!r} "
                         f"(it has: {', '.join(sorted(present))})")
    return set(only)
