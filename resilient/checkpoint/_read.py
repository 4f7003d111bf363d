"""Finding, verifying and loading committed checkpoints.

Verification comes in two costs. Fast (manifest plus file sizes, a few stat calls) catches what
crashes and full disks produce, truncated or missing files, and is what listings use. Full
re-hashes every byte and catches silent bit flips; loading always gets it for free, because
each payload file is read into memory once and hashed there before `torch.load` sees it.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ._hashing import checksum_bytes, checksum_file
from ._manifest import CHECKPOINT_SUFFIX, CheckpointError, Manifest, UntrustedCheckpointError, read_manifest


def verify(path: Path, *, full: bool = False) -> Manifest:
    """The manifest of `path` once every listed file has its size (and, if `full`, its checksum)."""
    path = Path(path)
    manifest = read_manifest(path)
    for name, entry in manifest.files.items():
        file = path / name
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path}: payload file {name} is missing") from None
        if size != entry.size:
            raise CheckpointError(
                f"checkpoint {path}: payload file {name} has {size} bytes, the manifest says {entry.size}"
            )
        if full and checksum_file(file) != entry.checksum:
            raise CheckpointError(f"checkpoint {path}: payload file {name} is corrupt (its checksum does not match)")
    return manifest


def _weights_only_detail(error: pickle.UnpicklingError) -> str:
    """The line of torch's long message that names the offending class, if it has one."""
    lines = [line.strip() for line in str(error).splitlines() if "WeightsUnpickler error" in line]
    return f" ({lines[0]})" if lines else ""


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
    manifest = read_manifest(path)
    loaded: dict[str, object] = {}
    for name in names:
        entry = manifest.files.get(name)
        if entry is None:
            raise CheckpointError(f"checkpoint {path} has no payload file {name} (it has: {', '.join(manifest.files)})")
        try:
            data = (path / name).read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path}: payload file {name} is missing") from None
        if len(data) != entry.size or checksum_bytes(data) != entry.checksum:
            raise CheckpointError(
                f"checkpoint {path}: payload file {name} is corrupt "
                f"({len(data)} bytes, manifest says {entry.size}; checksum does not match)"
            )
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


def _candidates(dirs: Iterable[Path]) -> Iterator[Path]:
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if not entry.name.startswith(".") and entry.name.endswith(CHECKPOINT_SUFFIX):
                yield Path(entry.path)


def find_checkpoints(dirs: Iterable[Path]) -> list[tuple[Path, Manifest]]:
    """Committed, fast-verified checkpoints directly in `dirs`, newest (highest step) first.

    A checkpoint reached through several names (``last.ckpt`` linking to a top-k one, or the
    same directory listed twice) is reported once, under its real path, so callers can compare
    paths. Broken ones are skipped with a warning, not an error: the caller wants the newest
    checkpoint that is sound, and one bad file must not stop a resume.
    """
    if isinstance(dirs, (str, os.PathLike)):
        raise TypeError(f"dirs must be an iterable of directories, not the single path {dirs!r}")
    found: dict[Path, Manifest] = {}
    seen: set[Path] = set()
    for candidate in _candidates(dirs):
        real = candidate.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            found[real] = verify(real)
        except CheckpointError as error:
            warnings.warn(f"skipping checkpoint {candidate}: {error}", stacklevel=2)
    return sorted(found.items(), key=lambda item: (-item[1].step, -item[1].created, str(item[0])))
