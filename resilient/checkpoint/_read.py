"""Finding and verifying committed checkpoints, from their manifests and bytes alone (no torch).

Verification comes in two costs. Fast (manifest plus file sizes, one lstat per file) catches what
crashes and full disks produce, truncated or missing files, and is what listings use. Full
re-hashes every byte and catches silent bit flips; loading (`_load`) always gets it for free.
Every file is opened through `_files`, so an odd or forged checkpoint is an error naming it,
never a hang, a traceback or a read outside the checkpoint.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from ._errors import CheckpointError, CorruptCheckpointError
from ._files import READ_FLAGS, check_extent, check_length, member_size, open_checkpoint, open_member
from ._hashing import checksum_mapped
from ._manifest import CHECKPOINT_SUFFIX, MANIFEST_NAME, FileEntry, Manifest, read_manifest, read_manifest_at

# The head `_render` writes: the envelope's first key, then the manifest's first field.
_STEP_HEAD = re.compile(rb'\{\n  "manifest": \{\n    "step": (0|[1-9][0-9]{0,30}),\n')
_HEAD_BYTES = 64


def check_size(size: int, entry: FileEntry, what: str) -> None:
    """A payload file's size against its manifest's `entry` (shared with `_load`, like `corrupt`)."""
    if size != entry.size:
        raise CheckpointError(f"{what} has {size} bytes, the manifest says {entry.size}")


def corrupt(what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{what} is corrupt (its checksum does not match)")


def verify(path: Path, *, full: bool = False) -> Manifest:
    """The manifest of `path` once every listed file has its size (and, if `full`, its checksum)."""
    path = Path(path)
    with open_checkpoint(path) as directory:
        manifest = read_manifest_at(directory, path)
        for name, entry in manifest.files.items():
            what = f"checkpoint {path}: payload file {name}"
            if full:
                check_checksum(directory, path, name, entry)
            else:
                check_size(member_size(directory, name, what), entry, what)
    return manifest


def check_checksum(directory: int, path: Path, name: str, entry: FileEntry) -> None:
    """Payload file `name` has the size and checksum its manifest `entry` says, streamed from disk."""
    what = f"checkpoint {path}: payload file {name}"
    with open_member(directory, name, what) as (fd, size):
        check_size(size, entry, what)
        check_extent(fd, size, what)
        checksum = checksum_mapped(fd, size)
        check_length(os.fstat(fd).st_size, size, what)
    if checksum != entry.checksum:
        raise corrupt(what)


def prefetch(path: Path, names: Iterable[str]) -> None:
    """Have the kernel start reading files of the checkpoint at `path` that the caller reads next,
    in the background (``POSIX_FADV_WILLNEED``): a sharded resume's shards, from a cold page
    cache, then stream from the disk while the ranks agree on their load plans. Best effort: a
    file that cannot be opened is left to the read that follows, which reports it."""
    try:
        with open_checkpoint(path) as directory:
            for name in names:
                with open_member(directory, name, f"checkpoint {path}: payload file {name}") as (fd, size):
                    os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
    except CheckpointError:
        pass


def _candidates(dirs: Iterable[Path]) -> Iterator[tuple[str, str]]:
    """(path, real path) of each checkpoint name directly in `dirs`, whatever the entry turns out to be.

    Only symlinks are resolved, and without failing: a loop or a dangling link must reach the
    reader (`verify`), which says what is wrong with it. For the other entries the directory's real
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
    _refuse_single_path(dirs)
    return _newest(dirs)


def _refuse_single_path(dirs: Iterable[Path]) -> None:
    """A path is itself iterable (a string, by character): taken for `dirs`, it would find nothing."""
    if isinstance(dirs, (str, os.PathLike)):
        raise TypeError(f"dirs must be an iterable of directories, not the single path {dirs!r}")


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


def read_manifests(dirs: Iterable[Path]) -> list[tuple[Path, Manifest]]:
    """The authenticated manifest of each checkpoint directly in `dirs`, by real path, dir by dir in name order.

    For a caller that asks what each checkpoint is (its rule, its step), not whether it loads:
    no payload file is looked at, so among thousands of checkpoints this costs one small file
    each, and a checkpoint listed here may still be unsound. The orphan clean-up after a resume
    uses it: only the checkpoint resumed from needs verifying, and an evicted one is garbage
    even if damaged. A checkpoint reached through several names is listed once, as in
    `find_checkpoints`. An entry without a readable manifest is left out without a warning:
    what it holds is unknown, so it is nobody's to act on.
    """
    _refuse_single_path(dirs)
    found: dict[str, Manifest | None] = {}
    for candidate, real in _candidates(dirs):
        if real not in found:
            try:
                found[real] = read_manifest(candidate)
            except CheckpointError:
                found[real] = None
    return [(Path(real), manifest) for real, manifest in found.items() if manifest is not None]
