"""Atomic, verifiable checkpoint storage.

A checkpoint is a directory ``<name>.ckpt/`` of `torch.save` payload files plus MANIFEST.json,
written last, that lists each file's size and xxh3-128 checksum. It appears under its final
name only by an atomic rename once complete and fsynced, so a crash at any instant leaves
either nothing visible or a whole checkpoint; leftovers are dot-names that
`recover_directory` tidies at the next start.

Finding, listing and verifying checkpoints read manifests and bytes only; the names that need
torch (`load_files`, `write_checkpoint`, the staging of asynchronous saves) are imported when
first read (`resilient._lazy`),
so `resilient checkpoints` lists and verifies without paying seconds for torch.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ._atomic import link_checkpoint, make_temporary, remove_checkpoint
from ._errors import (
    CandidateRefused,
    CheckpointError,
    CheckpointWriteError,
    CorruptCheckpointError,
    UntrustedCheckpointError,
)
from ._manifest import (
    CHECKPOINT_SUFFIX,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SHARDS_METADATA,
    CheckpointKind,
    CheckpointOrigin,
    FileEntry,
    Manifest,
    read_manifest,
    shard_writer,
)
from ._read import find_checkpoints, newest_checkpoints, prefetch, read_manifests, verify
from ._recover import is_checkpoint_entry, recover_directory
from ._seal import seal_checkpoint

if TYPE_CHECKING:
    from ._load import Payloads, load_files, open_payloads
    from ._pages import MappedPayloads
    from ._sharded import check_reported, read_shards, read_whole_shards, shard_metadata, write_shards
    from ._staging import NotStageable, Staged, Stager, split_dtensors
    from ._write import write_checkpoint, write_files

__getattr__, __dir__ = lazy_exports(__name__, {
    "._load": ("Payloads", "load_files", "open_payloads"),
    "._pages": ("MappedPayloads",),
    "._sharded": ("check_reported", "read_shards", "read_whole_shards", "shard_metadata", "write_shards"),
    "._staging": ("NotStageable", "Staged", "Stager", "split_dtensors"),
    "._write": ("write_checkpoint", "write_files"),
})

__all__ = [
    "CHECKPOINT_SUFFIX",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CandidateRefused",
    "CheckpointError",
    "CheckpointKind",
    "CheckpointOrigin",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "FileEntry",
    "Manifest",
    "MappedPayloads",
    "Payloads",
    "NotStageable",
    "SHARDS_METADATA",
    "Staged",
    "Stager",
    "UntrustedCheckpointError",
    "check_reported",
    "find_checkpoints",
    "is_checkpoint_entry",
    "link_checkpoint",
    "load_files",
    "make_temporary",
    "newest_checkpoints",
    "open_payloads",
    "prefetch",
    "read_manifest",
    "read_manifests",
    "read_shards",
    "read_whole_shards",
    "recover_directory",
    "remove_checkpoint",
    "seal_checkpoint",
    "shard_metadata",
    "shard_writer",
    "split_dtensors",
    "verify",
    "write_checkpoint",
    "write_files",
    "write_shards",
]
