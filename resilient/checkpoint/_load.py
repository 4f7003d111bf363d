"""Loading payload files of a committed checkpoint: the one part of `checkpoint/` that needs torch.

Apart from `_read` (finding and verifying, which read only manifests and bytes), so that
listing and verifying checkpoints, as `resilient checkpoints` does, never imports torch: the
package exports `load_files` through `resilient._lazy`. Loading always gets full verification
for free, because each payload file is hashed through a memory map of the descriptor
`torch.load` then maps.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ._errors import CheckpointError, UntrustedCheckpointError
from ._files import check_extent, open_checkpoint, open_member
from ._hashing import checksum_mapped
from ._manifest import Manifest, read_manifest_at
from ._pages import MappedPayloads
from ._read import check_checksum, check_size, corrupt


def _weights_only_detail(error: pickle.UnpicklingError) -> str:
    """The line of torch's long message that names the offending class, if it has one."""
    lines = [line.strip() for line in str(error).splitlines() if "WeightsUnpickler error" in line]
    return f" ({lines[0]})" if lines else ""


def _load_payload(
    directory: int, path: Path, manifest: Manifest, name: str, weights_only: bool, map_location: str | torch.device,
    pages: MappedPayloads | None,
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
        check_size(size, entry, what)
        before = os.fstat(fd)
        check_extent(fd, size, what)
        if checksum_mapped(fd, size) != entry.checksum:
            raise corrupt(what)
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
        if pages is not None:
            pages.add(after)
    return loaded


class Payloads:
    """The payload files of one committed checkpoint, under one read of its manifest (`manifest`)
    and one descriptor of its directory: a caller that decides what to read from the manifest
    (a resume: its rank's file, its share of the others) reads the manifest once, and every file
    it reads is one that manifest lists, however the directory changes meanwhile."""

    def __init__(self, directory: int, path: Path, *, weights_only: bool, map_location: str | torch.device,
                 pages: MappedPayloads | None) -> None:
        self._directory, self._path = directory, path
        self._weights_only, self._map_location, self._pages = weights_only, map_location, pages
        self.manifest = read_manifest_at(directory, path)

    def load(self, name: str) -> object:
        """Payload file `name`, checked against its checksum before it is unpickled."""
        return _load_payload(self._directory, self._path, self.manifest, name, self._weights_only,
                             self._map_location, self._pages)

    def check(self, names: Iterable[str]) -> None:
        """The checksums of files not loaded (each hashed once, from disk)."""
        for name in names:
            entry = self.manifest.files.get(name)
            if entry is None:
                raise CheckpointError(f"checkpoint {self._path} has no payload file {name}")
            check_checksum(self._directory, self._path, name, entry)


@contextmanager
def open_payloads(path: Path, *, weights_only: bool = True, map_location: str | torch.device = "cpu",
                  pages: MappedPayloads | None = None) -> Iterator[Payloads]:
    """The committed checkpoint at `path`, its manifest read, for loading and checking its files.

    Peak memory is what the caller touches of the mapped tensors, not one copy of the file plus
    another of the objects; `pages` records the mapped files, so that the caller can give back
    the pages of tensors it has copied out.
    """
    with open_checkpoint(Path(path)) as directory:
        yield Payloads(directory, Path(path), weights_only=weights_only, map_location=map_location, pages=pages)


def load_files(
    path: Path,
    names: Iterable[str],
    *,
    weights_only: bool = True,
    map_location: str | torch.device = "cpu",
    also_check: Iterable[str] = (),
    pages: MappedPayloads | None = None,
) -> dict[str, object]:
    """Load payload files of a checkpoint, each read once and checked before it is unpickled
    (`open_payloads`); `also_check` names files not loaded whose checksums are checked too,
    under the same manifest read. A file is never hashed twice.
    """
    if isinstance(names, str):
        raise TypeError(f"names must be an iterable of file names, not the string {names!r}")
    with open_payloads(path, weights_only=weights_only, map_location=map_location, pages=pages) as payloads:
        loaded = {name: payloads.load(name) for name in names}
        payloads.check(name for name in also_check if name not in loaded)
    return loaded
