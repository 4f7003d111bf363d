"""Sharded state (FSDP2, DTensor) written and read by every rank through torch.distributed.checkpoint.

No rank holds a sharded model whole, so no rank can `torch.save` it, and gathering it on rank 0
would need the whole model's memory there and serialize the write. So every rank writes its own
shards with DCP, its planner and its metadata (DCP's format: DCP's own tools, and
``dcp_to_torch_save``, read it), into the temporary directory of the checkpoint being written.
Each rank checksums the shard files it wrote and hands their entries to rank 0, which lists them
in the manifest beside its own files and commits: the checkpoint appears whole or not at all,
like any other, and verification, fallback and retention treat shards like ``state.pt``.

DCP's metadata says which files the checkpoint needs; rank 0 checks that every one of them was
reported, so a rank whose files went unlisted (a naming change in a later torch) cannot leave a
checkpoint that looks complete. Importing DCP takes seconds: only a run with sharded state
imports this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.distributed.checkpoint as dcp
from torch.distributed import ProcessGroup
from torch.distributed.checkpoint import Metadata
from torch.distributed.checkpoint.api import CheckpointException

from ._errors import CheckpointError
from ._files import READ_FLAGS
from ._hashing import checksum_fd
from ._manifest import SHARDS_METADATA, FileEntry


def _entry(path: Path) -> FileEntry:
    fd = os.open(path, READ_FLAGS)
    try:
        checksum, size = checksum_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return FileEntry(size=size, checksum=checksum)


def write_shards(state: Mapping[str, Any], directory: Path, rank: int, process_group: ProcessGroup | None = None,
                 *, alone: bool = False) -> tuple[dict[str, FileEntry], set[str]]:
    """Every rank, together: write `state` (DCP state dicts by name) into `directory`, DCP
    coordinating the ranks on `process_group` (None: torch's default group), or on none at all
    when the rank is `alone` (a world of one, writing from a background thread).

    Returns the entries of the files this rank wrote (rank 0: also DCP's ``.metadata``) and the
    names of every file the checkpoint needs, from DCP's metadata, to check against the entries
    all ranks report (`check_reported`).
    """
    try:
        metadata = dcp.save(dict(state), storage_writer=dcp.FileSystemWriter(directory, sync_files=True),
                            process_group=process_group, no_dist=alone)
    except CheckpointException as error:  # a BaseException, with every rank's traceback in its text
        raise _failed("writing", directory, error) from None
    return shard_entries(metadata, directory, rank)


def shard_entries(metadata: Metadata, directory: Path, rank: int) -> tuple[dict[str, FileEntry], set[str]]:
    """What `write_shards` returns, once DCP has written `metadata`'s checkpoint into `directory`."""
    needed = {info.relative_path for info in metadata.storage_data.values()} | {SHARDS_METADATA}
    prefix = f"__{rank}_"
    mine = sorted(name for name in os.listdir(directory) if name.startswith(prefix) and name in needed)
    if rank == 0:
        mine.append(SHARDS_METADATA)
    return {name: _entry(directory / name) for name in mine}, needed


def check_reported(needed: set[str], reported: Mapping[str, FileEntry], directory: Path) -> None:
    """Rank 0: every file DCP's metadata names has an entry (its size and checksum) in `reported`."""
    missing = sorted(needed - set(reported))
    if missing:
        raise CheckpointError(f"sharded checkpoint in {directory}: no rank reported {', '.join(missing[:5])}")


def read_shards(state: dict[str, Any], path: Path) -> None:
    """Every rank, together: fill `state` (DCP state dicts by name, as this run shards them) in
    place from the sharded checkpoint at `path`, resharding as DCP's planner does."""
    try:
        dcp.load(state, storage_reader=dcp.FileSystemReader(path))
    except CheckpointException as error:
        raise _failed("reading", path, error) from None


def _failed(doing: str, directory: Path, error: CheckpointException) -> CheckpointError:
    """DCP's failure, which reaches every rank, as one line naming each failed rank and its error."""
    causes = "; ".join(f"rank {rank}: {type(cause).__name__}: {cause}"
                       for rank, (cause, _) in sorted(error.failures.items()))
    return CheckpointError(f"{doing} the shards of {directory} failed on {causes}")
