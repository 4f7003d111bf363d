"""Finding, verifying and loading committed checkpoints.

Verification comes in two costs. Fast (manifest plus file sizes, one lstat per file) catches what
crashes and full disks produce, truncated or missing files, and is what listings use. Full
re-hashes every byte and catches silent bit flips; loading always gets it for free, because
each payload file is hashed through a memory map of the descriptor `torch.load` then maps.
Every file is opened through `_files`, so an odd or forged checkpoint is an error naming it,
never a hang, a traceback or a read outside the checkpoint.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ._errors import CheckpointError, UntrustedCheckpointError
from ._files import (
    READ_FLAGS,
    check_extent,
    check_length,
    member_size,
    open_checkpoint,
    open_member,
)
from ._hashing import checksum_fd, checksum_mapped
from ._manifest import CHECKPOINT_SUFFIX, MANIFEST_NAME, FileEntry, Manifest, read_manifest_at

# The head `_render` writes: the envelope's first key, then the manifest's first field.
_STEP_HEAD = re.compile(rb'\{\n  "manifest": \{\n    "step": (0|[1-9][0-9]{0,30}),\n')
_HEAD_BYTES = 64


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
            if full:
                _check_checksum(directory, path, name, entry)
            else:
                _check_size(member_size(directory, name, what), entry, what)
    return manifest


def _check_checksum(directory: int, path: Path, name: str, entry: FileEntry) -> None:
    """Payload file `name` has the size and checksum its manifest `entry` says, streamed from disk."""
    what = f"checkpoint {path}: payload file {name}"
    with open_member(directory, name, what) as (fd, size):
        _check_size(size, entry, what)
        checksum, length = checksum_fd(fd, size + 1)
    check_length(length, size, what)
    if checksum != entry.checksum:
        raise _corrupt(what)


def _weights_only_detail(error: pickle.UnpicklingError) -> str:
    """The line of torch's long message that names the offending class, if it has one."""
    lines = [line.strip() for line in str(error).splitlines() if "WeightsUnpickler error" in line]
    return f" ({lines[0]})" if lines else ""


def _load_payload(
    directory: int, path: Path, manifest: Manifest, name: str, weights_only: bool, map_location: str | torch.device
) -> object:
    """Payload file `name`, its checksum checked through the open descriptor before torch unpickles it.

    torch loads the very file that was hashed (Linux's ``/proc/self/fd``, never the name again,
    so a checkpoint renamed or replaced meanwhile cannot slip in) and memory-maps its tensors: the
    bytes are neither read into a buffer nor copied into fresh storages, and a tensor that is
    never touched is never read. A tensor therefore shares its pages with the file until it is
    written to (a private mapping: writes never reach the file). A file changed in place after
    it was hashed would be seen by any memory map; committed checkpoints are never written in
    place, and the file's size and modification time are checked again after the load, so a
    writer active during it is refused (not its change time: linking and unlinking a name of
    the file, as another rule's retention does, changes that).
    """
    entry = manifest.files.get(name)
    if entry is None:
        raise CheckpointError(f"checkpoint {path} has no payload file {name} (it has: {', '.join(manifest.files)})")
    what = f"checkpoint {path}: payload file {name}"
    with open_member(directory, name, what) as (fd, size):
        _check_size(size, entry, what)
        before = os.fstat(fd)
        check_extent(fd, size, what)
        if checksum_mapped(fd, size) != entry.checksum:
            raise _corrupt(what)
        try:
            loaded = torch.load(f"/proc/self/fd/{fd}", mmap=True, weights_only=weights_only, map_location=map_location)
        except pickle.UnpicklingError as error:
            if not weights_only:
                raise
            raise UntrustedCheckpointError(
                f"{what} holds non-tensor objects{_weights_only_detail(error)}; "
                "loading them requires weights_only=False, which can run arbitrary code: "
                "use it only for checkpoints you trust"
            ) from None
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (size, before.st_mtime_ns):
            raise CheckpointError(f"{what} changed while it was loaded")
    return loaded


def load_files(
    path: Path,
    names: Iterable[str],
    *,
    weights_only: bool = True,
    map_location: str | torch.device = "cpu",
    check_others: bool = False,
) -> dict[str, object]:
    """Load payload files of a checkpoint, each read once and checked before it is unpickled.

    `check_others` also checks the checksums of the files not loaded (a resume must know that
    every rank's file is sound before it chooses a checkpoint), under the same manifest read,
    and never hashes a file twice. Peak memory is what the caller touches of the mapped
    tensors, not one copy of the file plus another of the objects.
    """
    path = Path(path)
    if isinstance(names, str):
        raise TypeError(f"names must be an iterable of file names, not the string {names!r}")
    loaded: dict[str, object] = {}
    with open_checkpoint(path) as directory:
        manifest = read_manifest_at(directory, path)
        for name in names:
            loaded[name] = _load_payload(directory, path, manifest, name, weights_only, map_location)
        if check_others:
            for name, entry in manifest.files.items():
                if name not in loaded:
                    _check_checksum(directory, path, name, entry)
    return loaded


def _candidates(dirs: Iterable[Path]) -> Iterator[tuple[str, str]]:
    """(path, real path) of each checkpoint name directly in `dirs`, whatever the entry turns out to be.

    Only symlinks are resolved, and without failing: a loop or a dangling link must reach
    `verify`, which says what is wrong with it. For the other entries the directory's real
    path, resolved once, is enough; resolving each entry would cost an lstat per component.
    Strings, not Paths: among thousands of entries, building Paths would be most of the cost.
    """
    for directory in dirs:
        directory = str(Path(directory))
        if not os.path.isdir(directory):
            continue
        real_directory = os.path.realpath(directory)
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            name = entry.name
            if not name.startswith(".") and name.endswith(CHECKPOINT_SUFFIX):
                yield entry.path, os.path.realpath(entry.path) if entry.is_symlink() else f"{real_directory}/{name}"


def _step_hint(path: str) -> int | None:
    """The step a manifest's first line claims, read without parsing it: only an order to verify in.

    An authentic manifest is byte for byte what the writer renders, so its first field, the
    step, stands at a fixed place and is the step it holds; a false claim fails authentication.
    None (to be authenticated at once) when the head looks different: another format, damage.
    """
    try:
        fd = os.open(f"{path}/{MANIFEST_NAME}", READ_FLAGS)
    except OSError:
        return None
    try:
        head = os.read(fd, _HEAD_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    match = _STEP_HEAD.match(head)
    return int(match[1]) if match else None


def newest_checkpoints(dirs: Iterable[Path]) -> Iterator[tuple[Path, Manifest]]:
    """`find_checkpoints`, lazily: each checkpoint is authenticated only when the caller gets to it.

    Candidates are ordered by the step their manifest's first line claims, read from a few
    bytes, then authenticated newest first, all of one step together (their creation times
    order them): finding the newest valid checkpoint among thousands costs one small read each
    and one authentication, not one authentication each. The order, the warnings for broken
    entries (when reached) and the result are those of `find_checkpoints`.
    """
    if isinstance(dirs, (str, os.PathLike)):
        raise TypeError(f"dirs must be an iterable of directories, not the single path {dirs!r}")
    return _newest(dirs)


def _newest(dirs: Iterable[Path]) -> Iterator[tuple[Path, Manifest]]:
    by_step: dict[int, list[tuple[str, str, Manifest | None]]] = defaultdict(list)
    seen: set[str] = set()
    for candidate, real in _candidates(dirs):
        if real in seen:
            continue
        seen.add(real)
        step = _step_hint(candidate)
        manifest = None
        if step is None:  # an unusual head: authenticate now to learn the step, or skip it now
            manifest = _verified(candidate)
            if manifest is None:
                continue
            step = manifest.step
        by_step[step].append((candidate, real, manifest))
    for step in sorted(by_step, reverse=True):
        group = [(real, manifest or _verified(candidate)) for candidate, real, manifest in by_step[step]]
        valid = [(Path(real), manifest) for real, manifest in group if manifest is not None]
        yield from sorted(valid, key=lambda item: (-item[1].created, str(item[0])))


def _verified(candidate: str) -> Manifest | None:
    try:
        return verify(candidate)
    except CheckpointError as error:
        warnings.warn(f"skipping checkpoint {candidate}: {error}", stacklevel=4)
        return None


def find_checkpoints(dirs: Iterable[Path]) -> list[tuple[Path, Manifest]]:
    """Committed, fast-verified checkpoints directly in `dirs`, newest (highest step) first.

    A checkpoint reached through several names (``last.ckpt`` linking to a top-k one, or the
    same directory listed twice) is reported once, under its real path, so callers can compare
    paths. Broken ones, and entries that are no checkpoint at all (a file, a dangling link, a
    link loop, a FIFO, an unreadable directory), are skipped with a warning that names them,
    not an error: the caller wants the newest checkpoint that is sound, and one bad entry must
    not stop a resume. To stop at the first sound one, iterate `newest_checkpoints`.
    """
    return list(newest_checkpoints(dirs))
