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
checkpoint that looks complete. Importing DCP takes seconds: only a run with sharded state, or
a reader of one, imports this module.

One process without a process group can also read the shards whole (`read_whole_shards`, for
`load_checkpoint` and `resilient export`), through DCP's public API alone: `dcp.load` with
``no_dist=True`` into a state dict this module builds from DCP's metadata, as
``dcp_to_torch_save`` does with a private planner. DCP unpickles its ``.metadata`` with plain
`pickle` and its non-tensor values with ``torch.load(weights_only=False)``, so under
``weights_only`` both readers, a resume's and this one, check them first: the metadata is read
through an unpickler that admits only what DCP's metadata is made of, and each value must load
with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import os
import pathlib
import pickle
import sys
import warnings
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed import ProcessGroup
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import FileSystem
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import ReadItem, SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult

from ._errors import CandidateRefused, CheckpointError, CorruptCheckpointError, UntrustedCheckpointError
from ._files import open_checkpoint, open_member, read_exactly
from ._hashing import checksum_bytes
from ._manifest import SHARDS_METADATA, FileEntry
from ._read import check_size, corrupt
from ._seal import file_entry
from ._shard_reader import ShardReader
from ._write import without_torch_crc32
from ._writeback import WritebackFile


class _WritebackFileSystem(FileSystem):
    """DCP's local file system, whose files opened for writing go to the disk as they are written
    (`WritebackFile`): the fsync that follows each then finds little left to write."""

    @contextmanager
    def create_stream(self, path: str | os.PathLike[str], mode: str) -> Iterator[io.IOBase]:
        if mode != "wb":
            with super().create_stream(path, mode) as stream:
                yield stream
            return
        with io.BufferedWriter(WritebackFile(os.fspath(path))) as stream:
            yield stream


class _SealingWriter(dcp.FileSystemWriter):
    """DCP's own file system writer, except that the fsync of each file this rank wrote is ours:
    the moment DCP has written a file, a thread hashes it through the page cache while another
    fsyncs it (`file_entry`), so the hash costs nothing beyond the wait for the disk, and both
    overlap what DCP does next (gathering every rank's results; on rank 0, writing the metadata)
    instead of following it. One fsync per file, as DCP's ``sync_files`` does: the manifest
    vouches for no byte before it is durable. `write_data` is the public method every storage
    writer implements, `fs` the file system it writes through."""

    def __init__(self, directory: Path, hashing: ThreadPoolExecutor, syncing: ThreadPoolExecutor) -> None:
        super().__init__(directory, sync_files=False)
        self.fs = _WritebackFileSystem()
        self._directory = directory
        self._hashing, self._syncing = hashing, syncing
        self.sealing: dict[str, Future[FileEntry]] = {}

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> torch.futures.Future[list[WriteResult]]:
        written = super().write_data(plan, planner)
        for result in written.wait():  # done when the files are written (not yet durable)
            name = result.storage_data.relative_path
            if name not in self.sealing:
                self.sealing[name] = self._hashing.submit(file_entry, self._directory, name, self._syncing)
        return written


def write_shards(state: Mapping[str, Any], directory: Path, rank: int, process_group: ProcessGroup | None = None,
                 *, alone: bool = False) -> tuple[dict[str, FileEntry], set[str]]:
    """Every rank, together: write `state` (DCP state dicts by name) into `directory`, DCP
    coordinating the ranks on `process_group` (None: torch's default group), or on none at all
    when the rank is `alone` (a world of one, writing from a background thread). torch's crc32
    of each record is left out, as in our own files: the checksums cover every byte.

    Returns the entries of the files this rank wrote, each fsynced (rank 0: also DCP's
    ``.metadata``) and the names of every file the checkpoint needs, from DCP's metadata, to
    check against the entries all ranks report (`check_reported`).
    """
    with (ThreadPoolExecutor(thread_name_prefix="resilient-shard-hash") as hashing,
          ThreadPoolExecutor(thread_name_prefix="resilient-shard-fsync") as syncing):
        writer = _SealingWriter(directory, hashing, syncing)
        try:
            with without_torch_crc32():
                metadata = dcp.save(dict(state), storage_writer=writer, process_group=process_group, no_dist=alone)
        except CheckpointException as error:  # a BaseException, with every rank's traceback in its text
            raise _failed("writing", directory, error) from None
        # rank 0's metadata is sealed here, while the shards' fsyncs are still under way
        entries = {SHARDS_METADATA: file_entry(directory, SHARDS_METADATA)} if rank == 0 else {}
        entries.update({name: sealing.result() for name, sealing in writer.sealing.items()})
    return entries, {info.relative_path for info in metadata.storage_data.values()} | {SHARDS_METADATA}


def check_reported(needed: set[str], reported: Mapping[str, FileEntry], directory: Path) -> None:
    """Rank 0: every file DCP's metadata names has an entry (its size and checksum) in `reported`."""
    missing = sorted(needed - set(reported))
    if missing:
        raise CheckpointError(f"sharded checkpoint in {directory}: no rank reported {', '.join(missing[:5])}")


def shard_metadata(path: Path, files: Mapping[str, FileEntry], *, weights_only: bool) -> Metadata:
    """DCP's metadata of the sharded checkpoint at `path`, checked against its entry in `files`
    (the manifest's) as it is read, and read safely under `weights_only`.

    Every rank that loads sharded state reads it whole, so each checks it itself (a small file):
    damage is then found alike on every rank, before anything is unpickled from it. DCP's
    metadata may only point into the manifest's files, never at one beside them.
    """
    metadata = _read_metadata(path, files, weights_only)
    unlisted = sorted({info.relative_path for info in metadata.storage_data.values()} - set(files))
    if unlisted:
        raise CheckpointError(f"checkpoint {path}: DCP's metadata names {', '.join(unlisted[:5])}, "
                              "which its manifest does not list")
    return metadata


def read_shards(state: dict[str, Any], path: Path, metadata: Metadata | None, *, weights_only: bool,
                verify: Mapping[str, FileEntry] | None = None, refusal: Exception | None = None) -> None:
    """Every rank, together: fill `state` (DCP state dicts by name, as this run shards them) in
    place from the sharded checkpoint at `path` (`metadata` from `shard_metadata`), resharding
    as DCP's planner does; under `weights_only`, DCP's pickles are read as safely as
    `torch.load(weights_only=True)` reads ours.

    The files in `verify` (names and their manifest entries) are hashed as they are read, every
    byte of them (see `_shard_reader`): a `CorruptCheckpointError` then reaches every rank, after
    tensors of `state` may have been overwritten. A rank that has refused the checkpoint already
    (`refusal`: what it found wrong with its own part; `metadata` may then be None) still takes
    part: its refusal reaches every rank as a `CandidateRefused` before any rank reads anything.
    """
    _load(state, ShardReader(path, metadata, verify or {}, refusal), _Planner(weights_only), no_dist=False)


def read_whole_shards(path: Path, files: Mapping[str, FileEntry], names: Collection[str], *, weights_only: bool,
                      device: str | torch.device = "cpu", verify: Mapping[str, FileEntry] | None = None
                      ) -> dict[str, Any]:
    """One process, no process group: the sharded objects `names` of the checkpoint at `path`, each
    a state dict of whole tensors on `device` (as the run's `get_model_state_dict` /
    `get_optimizer_state_dict` gave them, so an optimizer's state is keyed by parameter names).
    `files` as for `shard_metadata`; the files in `verify` are hashed as they are read, as by
    `read_shards` (damage raises `CorruptCheckpointError`, and nothing is returned).
    """
    metadata = shard_metadata(path, files, weights_only=weights_only)
    planner = _WholePlanner(names, weights_only, device)
    with warnings.catch_warnings():  # no process group is what this reader means, not a mistake to warn of
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        _load({}, ShardReader(path, metadata, verify or {}), planner, no_dist=True)
    whole: dict[str, Any] = {name: {} for name in names}
    for key, value in planner.state_dict.items():
        _put(whole, metadata.planner_data.get(key, (key,)), value)
    return whole


def _load(state: dict[str, Any], reader: ShardReader, planner: _Planner, *, no_dist: bool) -> None:
    try:
        dcp.load(state, storage_reader=reader, planner=planner, no_dist=no_dist)
    except CheckpointException as error:
        causes = [cause for cause, _ in error.failures.values()]
        refusals = [each for cause in causes if isinstance(cause, CandidateRefused) for each in cause.errors]
        if refusals:  # before anything was read: whatever else failed, the candidate is out
            raise CandidateRefused(refusals) from None
        ours = ([cause for cause in causes if isinstance(cause, CorruptCheckpointError)]  # explains all the others
                or [cause for cause in causes if isinstance(cause, CheckpointError)])
        if ours:  # a refusal of this module's (damage, an untrusted value), as it was raised
            raise ours[0] from None
        raise _failed("reading", reader.checkpoint_id, error) from None
    planner.load_trusted()


def _read_metadata(path: Path, files: Mapping[str, FileEntry], weights_only: bool) -> Metadata:
    what = f"checkpoint {path}: payload file {SHARDS_METADATA}"
    entry = files.get(SHARDS_METADATA)
    if entry is None:
        raise CheckpointError(f"checkpoint {path} holds no sharded state: its manifest lists no {SHARDS_METADATA}")
    with open_checkpoint(path) as directory, open_member(directory, SHARDS_METADATA, what) as (fd, size):
        check_size(size, entry, what)
        data = read_exactly(fd, size, what)
    if checksum_bytes(data) != entry.checksum:
        raise corrupt(what)
    try:
        metadata = (_MetadataUnpickler(io.BytesIO(data), what).load() if weights_only else pickle.loads(data))
    except UntrustedCheckpointError:
        raise
    except Exception as error:  # a pickle that checks out but is no DCP metadata (written by something else)
        raise CheckpointError(f"{what} is no DCP metadata ({type(error).__name__}: {error})") from None
    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"{what} is no DCP metadata (it holds {type(metadata).__name__})")
    return metadata


class _MetadataUnpickler(pickle.Unpickler):
    """Plain `pickle`, but a global is admitted only if DCP's metadata is made of it: DCP's own
    dataclasses and enums, torch's sizes, dtypes, layouts and memory formats, paths, and torch's
    lookup of a layout by name. Nothing is imported: each must already be loaded."""

    def __init__(self, file: io.BytesIO, what: str) -> None:
        super().__init__(file)
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        found = getattr(sys.modules.get(module), name, None) if "." not in name else None
        if found is not None and _admitted(module, name, found):
            return found
        raise UntrustedCheckpointError(
            f"{self._what} refers to {module}.{name}, which DCP's metadata never holds; loading it "
            "requires weights_only=False, which can run arbitrary code: use it only for checkpoints you trust")


_TORCH_VALUES = (torch.dtype, torch.layout, torch.memory_format)


def _admitted(module: str, name: str, found: object) -> bool:
    if module.startswith("torch.distributed.checkpoint."):
        return isinstance(found, type) and (dataclasses.is_dataclass(found) or issubclass(found, enum.Enum))
    if module == "torch":
        return found is torch.Size or isinstance(found, _TORCH_VALUES)
    if module == "pathlib":
        return isinstance(found, type) and issubclass(found, pathlib.PurePath)
    return (module, name) == ("torch.serialization", "_get_layout")  # a layout by its name, as torch pickles it


class _Planner(dcp.DefaultLoadPlanner):
    """DCP's planner, except that each non-tensor value (DCP stores each as a `torch.save` of it,
    and reads it back with ``weights_only=False``) is loaded with ``weights_only=True``: what passes
    holds nothing an unrestricted load could run, and needs no second load. A value that does not
    pass is refused under `weights_only`; otherwise (a trusted checkpoint) it is loaded
    unrestricted by `load_trusted`, once DCP's read has ended on every rank without error, that
    is once every rank has verified its files: pickles are unpickled unrestricted only if sound."""

    def __init__(self, weights_only: bool, **options: bool) -> None:
        super().__init__(**options)
        self._weights_only = weights_only
        self._trusted: list[tuple[ReadItem, io.BytesIO]] = []

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError:
            if self._weights_only:
                raise UntrustedCheckpointError(
                    f"the sharded value {read_item.dest_index.fqn} holds non-tensor objects; loading them requires "
                    "weights_only=False, which can run arbitrary code: use it only for checkpoints you trust"
                ) from None
            value.seek(0)
            self._trusted.append((read_item, value))
            return
        self._set(read_item, loaded)

    def load_trusted(self) -> None:
        """Load the values that `load_bytes` left for after the read, unrestricted."""
        for read_item, value in self._trusted:
            self._set(read_item, torch.load(value, weights_only=False))
        self._trusted.clear()

    def _set(self, read_item: ReadItem, value: Any) -> None:
        """Put `value` where DCP's own `load_bytes` puts it (`mappings` and `original_state_dict`
        are its public attributes: each flattened key's place in the state dict it was given)."""
        if self.flatten_state_dict:
            _put(self.original_state_dict, self.mappings[read_item.dest_index.fqn], value)
        else:
            self.state_dict[read_item.dest_index.fqn] = value


class _WholePlanner(_Planner):
    """DCP's planner, asked for every entry of `names` whole: an empty tensor of each tensor's
    full size, which DCP fills from whichever shards hold its parts, and a placeholder for each
    other value, which DCP reads as bytes (`load_bytes`)."""

    def __init__(self, names: Collection[str], weights_only: bool, device: str | torch.device) -> None:
        super().__init__(weights_only, flatten_state_dict=False)
        self._names = set(names)
        self._device = device

    def set_up_planner(self, state_dict: dict[str, Any], metadata: Metadata | None = None,
                       is_coordinator: bool = False) -> None:
        assert metadata is not None and not state_dict
        for key, item in metadata.state_dict_metadata.items():
            if metadata.planner_data.get(key, (key,))[0] in self._names:
                state_dict[key] = (torch.empty(item.size, dtype=item.properties.dtype, device=self._device)
                                   if isinstance(item, TensorStorageMetadata) else item)
        super().set_up_planner(state_dict, metadata, is_coordinator)


def _put(root: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Set `value` at `path` (keys and list indices, as DCP's metadata records each flattened
    entry's place) in the nested dicts and lists under `root`, making them as needed."""
    node: Any = root
    for part, after in zip(path, path[1:]):
        if _get(node, part) is None:
            _set(node, part, [] if isinstance(after, int) else {})
        node = _get(node, part)
    _set(node, path[-1], value)


def _get(node: dict[Any, Any] | list[Any], key: str | int) -> Any:
    if isinstance(node, list):
        return node[key] if isinstance(key, int) and key < len(node) else None
    return node.get(key)


def _set(node: dict[Any, Any] | list[Any], key: str | int, value: Any) -> None:
    if isinstance(node, list):
        assert isinstance(key, int)
        node.extend([None] * (key + 1 - len(node)))
    node[key] = value  # type: ignore[index]


def _failed(doing: str, directory: Path, error: CheckpointException) -> CheckpointError:
    """DCP's failure, which reaches every rank, as one line naming each failed rank and its error
    (ranks that failed alike, as every rank does on a model that does not fit, share one mention)."""
    ranks_by_cause: dict[str, list[int]] = {}
    for rank, (cause, _) in sorted(error.failures.items()):
        ranks_by_cause.setdefault(f"{type(cause).__name__}: {' '.join(str(cause).split())}", []).append(rank)
    causes = "; ".join(f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}: {cause}"
                       for cause, ranks in ranks_by_cause.items())
    return CheckpointError(f"{doing} the shards of {directory} failed on {causes}")
