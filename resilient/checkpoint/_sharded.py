"""Sharded state (FSDP2, DTensor) written and read by every rank through torch.distributed.checkpoint.

No rank holds a sharded model whole, so no rank can `torch.save` it, and gathering it on rank 0
would need the whole model's memory there and serialize the write. So every rank writes its own
shards with DCP, its planner and its metadata (DCP's format: DCP's own tools, and
``dcp_to_torch_save``, read it), into the temporary directory of the checkpoint being written.
Each rank checksums the shard files it wrote and hands their entries to rank 0, which lists them
in the manifest beside its own files and commits: the checkpoint appears whole or not at all,
like any other, and verification, fallback and retention treat shards like ``state.pt``.

DCP's metadata says which files the checkpoint needs; rank 0 checks that every one of them was
reported, so a rank whose files went unreported (a change in a later torch) cannot leave a
checkpoint that looks complete. Importing DCP takes seconds: only a run with sharded state
imports this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult

from ._errors import CheckpointError
from ._files import READ_FLAGS
from ._hashing import checksum_mapped
from ._manifest import SHARDS_METADATA, FileEntry


def _entry(path: Path) -> FileEntry:
    """The size and checksum of a file DCP has just written and fsynced, hashed through a memory
    map of the page cache the write left it in: no copy into a buffer, which cost three times
    the hashing itself (for a 120 MiB shard here: 12 ms mapped, ~40 ms read into a buffer,
    next to DCP's ~500 ms write). The file is this rank's own, just written into a temporary
    directory nothing else writes to, so nothing shrinks it under the map."""
    fd = os.open(path, READ_FLAGS)
    try:
        size = os.fstat(fd).st_size
        return FileEntry(size=size, checksum=checksum_mapped(fd, size))
    finally:
        os.close(fd)


class _HashingWriter(dcp.FileSystemWriter):
    """DCP's own file system writer (fsyncing every file), which hands each file this rank wrote
    to a thread to hash the moment its write returns: the hashing (xxhash lets go of the GIL)
    overlaps what DCP does next, gathering every rank's results and, on rank 0, writing and
    fsyncing the metadata, instead of following it. `write_data` is the public method every
    storage writer implements."""

    def __init__(self, directory: Path, pool: ThreadPoolExecutor) -> None:
        super().__init__(directory, sync_files=True)
        self._directory = directory
        self._pool = pool
        self.hashing: dict[str, Future[FileEntry]] = {}

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> torch.futures.Future[list[WriteResult]]:
        written = super().write_data(plan, planner)
        for result in written.wait():  # done when the files are written and fsynced
            name = result.storage_data.relative_path
            if name not in self.hashing:
                self.hashing[name] = self._pool.submit(_entry, self._directory / name)
        return written


def write_shards(state: Mapping[str, Any], directory: Path, rank: int) -> tuple[dict[str, FileEntry], set[str]]:
    """Every rank, together: write `state` (DCP state dicts by name) into `directory`.

    Returns the entries of the files this rank wrote (rank 0: also DCP's ``.metadata``) and the
    names of every file the checkpoint needs, from DCP's metadata, to check against the entries
    all ranks report (`check_reported`).
    """
    with ThreadPoolExecutor(thread_name_prefix="resilient-shard-hash") as pool:
        writer = _HashingWriter(directory, pool)
        try:
            metadata = dcp.save(dict(state), storage_writer=writer)
        except CheckpointException as error:  # a BaseException, with every rank's traceback in its text
            raise _failed("writing", directory, error) from None
        entries = {name: hashing.result() for name, hashing in writer.hashing.items()}
    if rank == 0:
        entries[SHARDS_METADATA] = _entry(directory / SHARDS_METADATA)
    return entries, {info.relative_path for info in metadata.storage_data.values()} | {SHARDS_METADATA}


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
    """DCP's failure, which reaches every rank, as one line naming each failed rank and its error
    (ranks that failed alike, as every rank does on a model that does not fit, share one mention)."""
    ranks_by_cause: dict[str, list[int]] = {}
    for rank, (cause, _) in sorted(error.failures.items()):
        ranks_by_cause.setdefault(f"{type(cause).__name__}: {cause}", []).append(rank)
    causes = "; ".join(f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}: {cause}"
                       for cause, ranks in ranks_by_cause.items())
    return CheckpointError(f"{doing} the shards of {directory} failed on {causes}")
