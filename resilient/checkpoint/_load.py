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
from collections.abc import Iterable
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


def load_files(
    path: Path,
    names: Iterable[str],
    *,
    weights_only: bool = True,
    map_location: str | torch.device = "cpu",
    also_check: Iterable[str] = (),
    pages: MappedPayloads | None = None,
) -> dict[str, object]:
    """Load payload files of a checkpoint, each read once and checked before it is unpickled.

    `also_check` names files not loaded whose checksums are checked too (a resume must know that
    every rank's file is sound before it chooses a checkpoint, and shares that work out among
    the ranks), under the same manifest read; a file is never hashed twice. Peak memory is what the caller touches of the mapped
    tensors, not one copy of the file plus another of the objects; `pages` records the mapped
    files, so that the caller can give back the pages of tensors it has copied out.
    """
    path = Path(path)
    if isinstance(names, str):
        raise TypeError(f"names must be an iterable of file names, not the string {names!r}")
    loaded: dict[str, object] = {}
    with open_checkpoint(path) as directory:
        manifest = read_manifest_at(directory, path)
        for name in names:
            loaded[name] = _load_payload(directory, path, manifest, name, weights_only, map_location, pages)
        for name in also_check:
            entry = manifest.files.get(name)
            if entry is None:
                raise CheckpointError(f"checkpoint {path} has no payload file {name}")
            if name not in loaded:
                check_checksum(directory, path, name, entry)
    return loaded
