"""Sealing a directory that another program wrote: the manifest that makes it a checkpoint.

Frameworks that save themselves (Hugging Face's `Trainer` writes ``checkpoint-N`` in place,
Accelerate's `save_state` writes into whatever directory it is given, every rank its own files)
cannot be made to write through `write_checkpoint`. What makes their directory trustworthy is the
same as for ours: every file fsynced, then MANIFEST.json with each file's size and checksum,
itself written under a temporary name, fsynced and renamed into place, so the manifest exists
only once everything it lists is durable. A directory without a valid manifest, or whose files
differ from it, is never resumed from: that is the commit, even when the directory's name
appeared before its files were complete.

When the directory is still temporary (Accelerate's, written under a dot-name), `commit_as`
renames it to its final name as `write_checkpoint` does, which is atomic as well.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Mapping
from concurrent.futures import Executor, Future, wait
from pathlib import Path
from typing import Any

from .._version import __version__
from ..rundir import fsync_dir
from ._atomic import commit
from ._errors import CheckpointError
from ._files import FILE_MODE, READ_FLAGS
from ._hashing import checksum_mapped
from ._manifest import MANIFEST_NAME, CheckpointKind, FileEntry, Manifest, name_problem, write_manifest

# A manifest being written by `seal_checkpoint` when its process died: never part of a checkpoint.
_MANIFEST_TEMP = re.compile(rf"^\.{re.escape(MANIFEST_NAME)}\.tmp-[0-9a-f]+$")


def file_entry(directory: Path, name: str, syncing: Executor | None = None) -> FileEntry:
    """Fsync the file `name` and return its size and checksum, hashed through a memory map of the
    page cache its write left it in: no copy into a buffer, which cost three times the hashing
    itself (for a 120 MiB shard here: 12 ms mapped, ~40 ms read into a buffer). A file whose
    writer fsynced it already costs the fsync nothing. With `syncing`, the fsync runs in one of
    its threads while this one hashes: a file just written is hashed while the disk takes it,
    for nothing beyond the fsync's own wait. Only a regular file qualifies. A file its writer
    made wider than FILE_MODE (DCP opens its shards with the umask's mode: 0o666 under
    `umask 000`) is narrowed to it: nothing in a checkpoint is writable by others."""
    path = directory / name
    fd = os.open(path, READ_FLAGS)
    synced: Future[None] | None = None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"cannot seal {directory}: {name} is not a regular file (a subdirectory or a link); "
                                  "only flat directories of files can be checkpoints")
        if stat.S_IMODE(info.st_mode) & ~FILE_MODE and info.st_uid == os.geteuid():
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & FILE_MODE)
        # another process may have written it without: the manifest must not outlive it
        if syncing is None:
            os.fsync(fd)
        else:
            synced = syncing.submit(os.fsync, fd)
        checksum = checksum_mapped(fd, info.st_size)
    finally:
        if synced is not None:
            wait([synced])  # the descriptor stays open until its fsync is done
        os.close(fd)
    if synced is not None:
        synced.result()  # its error, if any
    return FileEntry(size=info.st_size, checksum=checksum)


def seal_checkpoint(
    directory: Path,
    *,
    step: int,
    epoch: int,
    world_size: int,
    rule: str | Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    kind: str = CheckpointKind.FULL.value,
    commit_as: Path | None = None,
) -> Manifest:
    """Make the complete files in `directory` a checkpoint: fsync and hash each, then commit its manifest.

    Call it once every writer has finished (every rank's files are there). A manifest already in
    `directory` (an earlier seal of a directory written again in place) is replaced atomically;
    until then it does not match the new files, so the directory is invalid, never mistaken.
    `commit_as`: rename the sealed `directory` to this final name (`directory` then being a
    temporary beside it). CheckpointError names a file that cannot be part of a checkpoint.
    """
    directory = Path(directory)
    entries: dict[str, FileEntry] = {}
    for name in sorted(os.listdir(directory)):
        if name == MANIFEST_NAME:
            continue
        if _MANIFEST_TEMP.match(name):
            os.unlink(directory / name)  # a seal interrupted earlier
            continue
        problem = name_problem(name)
        if problem:
            raise CheckpointError(f"cannot seal {directory}: the file name {name!r} {problem}")
        entries[name] = file_entry(directory, name)
    if not entries:
        raise CheckpointError(f"cannot seal {directory}: it holds no files")
    manifest = Manifest(step=step, epoch=epoch, metrics={k: float(v) for k, v in (metrics or {}).items()},
                        world_size=world_size, kind=CheckpointKind(kind).value,
                        rule=rule if isinstance(rule, str) else dict(rule), files=entries, created=time.time(),
                        package_version=__version__)
    temp = directory / f".{MANIFEST_NAME}.tmp-{os.urandom(6).hex()}"
    try:
        write_manifest(directory, manifest, name=temp.name)
        os.rename(temp, directory / MANIFEST_NAME)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    if commit_as is not None:
        commit(directory, Path(commit_as))
    return manifest
