"""Finding, verifying and loading committed checkpoints.

Verification comes in two costs. Fast (manifest plus file sizes, one lstat per file) catches what
crashes and full disks produce, truncated or missing files, and is what listings use. Full
re-hashes every byte and catches silent bit flips; loading always gets it for free, because
each payload file is read into memory once and hashed there before `torch.load` sees it.
Every file is opened through `_files`, so an odd or forged checkpoint is an error naming it,
never a hang, a traceback or a read outside the checkpoint.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ._errors import CheckpointError, UntrustedCheckpointError
from ._files import (
    check_length,
    member_size,
    open_checkpoint,
    open_member,
    read_exactly,
)
from ._hashing import checksum_bytes, checksum_fd
from ._manifest import CHECKPOINT_SUFFIX, FileEntry, Manifest, read_manifest_at


def _check_size(size: int, entry: FileEntry, what: str) -> None:
    if size != entry.size:
        raise CheckpointError(f"{what} has {size} bytes, the manifest says {entry.size}")


def _corrupt(what: str) -> CheckpointError:
    return CheckpointError(f"{what} is corrupt (its checksum does not match)")


def verify(path: Path, *, full: bool = False) -> Manifest:
    """The manifest of `path` once every listed file has its size (and, if `full`, its checksum)."""
    path = Path(path)
    with open_checkpoint(path) as directory:
        manifest = read_manifest_at(directory, path)
        for name, entry in manifest.files.items():
            what = f"checkpoint {path}: payload file {name}"
            if not full:
                _check_size(member_size(directory, name, what), entry, what)
                continue
            with open_member(directory, name, what) as (fd, size):
                _check_size(size, entry, what)
                checksum, length = checksum_fd(fd, size + 1)
            check_length(length, size, what)
            if checksum != entry.checksum:
                raise _corrupt(what)
    return manifest


def _weights_only_detail(error: pickle.UnpicklingError) -> str:
    """The line of torch's long message that names the offending class, if it has one."""
    lines = [line.strip() for line in str(error).splitlines() if "WeightsUnpickler error" in line]
    return f" ({lines[0]})" if lines else ""


def _read_payload(directory: int, path: Path, manifest: Manifest, name: str) -> bytes:
    """The bytes of payload file `name`, checked against the manifest before anyone unpickles them."""
    entry = manifest.files.get(name)
    if entry is None:
        raise CheckpointError(f"checkpoint {path} has no payload file {name} (it has: {', '.join(manifest.files)})")
    what = f"checkpoint {path}: payload file {name}"
    with open_member(directory, name, what) as (fd, size):
        _check_size(size, entry, what)
        data = read_exactly(fd, size, what)
    if checksum_bytes(data) != entry.checksum:
        raise _corrupt(what)
    return data


def load_files(
    path: Path,
    names: Iterable[str],
    *,
    weights_only: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict[str, object]:
    """Load payload files of a checkpoint, each read once and checked before it is unpickled.

    Checking the bytes in memory, rather than verifying and then loading from disk, reads each
    file once and leaves no window in which the file could change between check and use. The
    price is peak memory of one file's bytes on top of the objects unpickled from them.
    """
    path = Path(path)
    if isinstance(names, str):
        raise TypeError(f"names must be an iterable of file names, not the string {names!r}")
    loaded: dict[str, object] = {}
    with open_checkpoint(path) as directory:
        manifest = read_manifest_at(directory, path)
        for name in names:
            data = _read_payload(directory, path, manifest, name)
            try:
                loaded[name] = torch.load(io.BytesIO(data), weights_only=weights_only, map_location=map_location)
            except pickle.UnpicklingError as error:
                if not weights_only:
                    raise
                raise UntrustedCheckpointError(
                    f"checkpoint {path}: payload file {name} holds non-tensor objects{_weights_only_detail(error)}; "
                    "loading them requires weights_only=False, which can run arbitrary code: "
                    "use it only for checkpoints you trust"
                ) from None
    return loaded


def _candidates(dirs: Iterable[Path]) -> Iterator[tuple[Path, Path]]:
    """(path, real path) of each checkpoint name directly in `dirs`, whatever the entry turns out to be.

    Only symlinks are resolved, and without failing: a loop or a dangling link must reach
    `verify`, which says what is wrong with it. For the other entries the directory's real
    path, resolved once, is enough; resolving each entry would cost an lstat per component.
    """
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        real_directory = Path(os.path.realpath(directory))
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if not entry.name.startswith(".") and entry.name.endswith(CHECKPOINT_SUFFIX):
                real = Path(os.path.realpath(entry.path)) if entry.is_symlink() else real_directory / entry.name
                yield Path(entry.path), real


def find_checkpoints(dirs: Iterable[Path]) -> list[tuple[Path, Manifest]]:
    """Committed, fast-verified checkpoints directly in `dirs`, newest (highest step) first.

    A checkpoint reached through several names (``last.ckpt`` linking to a top-k one, or the
    same directory listed twice) is reported once, under its real path, so callers can compare
    paths. Broken ones, and entries that are no checkpoint at all (a file, a dangling link, a
    link loop, a FIFO, an unreadable directory), are skipped with a warning that names them,
    not an error: the caller wants the newest checkpoint that is sound, and one bad entry must
    not stop a resume.
    """
    if isinstance(dirs, (str, os.PathLike)):
        raise TypeError(f"dirs must be an iterable of directories, not the single path {dirs!r}")
    found: dict[Path, Manifest] = {}
    seen: set[Path] = set()
    for candidate, real in _candidates(dirs):
        if real in seen:
            continue
        seen.add(real)
        try:
            found[real] = verify(candidate)
        except CheckpointError as error:
            warnings.warn(f"skipping checkpoint {candidate}: {error}", stacklevel=2)
    return sorted(found.items(), key=lambda item: (-item[1].step, -item[1].created, str(item[0])))
