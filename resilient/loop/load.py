"""`resilient.load_checkpoint`: read a checkpoint written by a Run, outside any Run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointKind, load_files, read_manifest
from ._state import STATE_FILE, rank_file


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    rank: int = 0,
    weights_only: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a verified checkpoint as `{tracked name: state_dict, ..., "resilient": metadata}`.

    The result holds every replicated object (model, optimizers, schedulers) and the per-rank
    objects of `rank`, so `model.load_state_dict(ckpt["model"])` works for both full and
    `save_weights_only` checkpoints. Every byte is checked against the manifest's checksums
    first: a truncated or corrupt checkpoint raises `CheckpointError` instead of loading.
    `weights_only=False` allows arbitrary pickled objects: use it only for files you trust.
    Sharded objects (FSDP2; named in ``["resilient"]["sharded"]``) are not in the result: the
    checkpoint holds them as a `torch.distributed.checkpoint`, which a run resumes on every rank.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"load_checkpoint(path): path must be a file system path, not {path!r}")
    if not isinstance(weights_only, bool):
        raise TypeError(f"load_checkpoint(): weights_only must be True or False, not {weights_only!r}")
    directory = Path(path)
    manifest = read_manifest(directory)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < manifest.world_size:
        raise ValueError(f"load_checkpoint(): rank must be an int in [0, {manifest.world_size}), not {rank!r}")
    names = [STATE_FILE] if manifest.kind == CheckpointKind.WEIGHTS else [STATE_FILE, rank_file(rank)]
    files = load_files(directory, names, weights_only=weights_only, map_location=map_location)
    state = files[STATE_FILE]
    result: dict[str, Any] = dict(state["objects"])
    meta: dict[str, Any] = {"step": manifest.step, "epoch": manifest.epoch, "metrics": dict(manifest.metrics),
                            "kind": manifest.kind, "world_size": manifest.world_size, "rule": manifest.rule}
    if manifest.kind == CheckpointKind.FULL:
        result.update(files[rank_file(rank)]["objects"])
        meta["loop"] = state["loop"]
        meta["rules"] = state["rules"]
        meta["sharded"] = list(state.get("sharded", ()))
    result["resilient"] = meta
    return result
