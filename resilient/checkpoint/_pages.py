"""Giving back the pages of memory-mapped payload files once their tensors have been copied out.

`load_files` memory-maps payload files, so a tensor that is never touched costs no memory. But
`load_state_dict` copies a module's weights out of the mapped tensors, and every page it read
stays resident in this process for as long as the loaded state lives: a resume would peak at a
second copy of the model. Releasing each tensor's pages right after its copy
(``madvise(MADV_DONTNEED)``; the page cache keeps them, a later read maps them again) bounds that
peak by the largest single tensor.

Only whole pages inside the private mappings of the files recorded here are released, found in
``/proc/self/maps`` by device and inode: never anonymous memory, where MADV_DONTNEED would zero
the data, and never a page shared with a neighbouring tensor. On a clean private file page
(nothing has written it yet) the release cannot change what a later read sees. Where
``/proc/self/maps`` or ``madvise`` is missing (not Linux), releasing does nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable, Iterable

import torch

_PAGE = mmap.PAGESIZE


def _madvise() -> Callable[[int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_MADVISE = _madvise()


class MappedPayloads:
    """The payload files a load memory-mapped, and the release of their copied tensors' pages."""

    def __init__(self) -> None:
        self._files: set[tuple[int, int]] = set()  # (major:minor device, inode)
        self._ranges: list[tuple[int, int]] | None = None

    def add(self, stat: os.stat_result) -> None:
        """Record a file that `torch.load(mmap=True)` mapped."""
        self._files.add((stat.st_dev, stat.st_ino))
        self._ranges = None

    def release(self, tensors: Iterable[torch.Tensor]) -> None:
        """Drop from this process the whole pages of these tensors' storages that lie in a recorded mapping."""
        if not self._files or _MADVISE is None:
            return
        ranges = self._mapped_ranges()
        for tensor in tensors:
            storage = tensor.untyped_storage()
            start = -(-storage.data_ptr() // _PAGE) * _PAGE
            end = (storage.data_ptr() + storage.nbytes()) // _PAGE * _PAGE
            if end > start and any(low <= start and end <= high for low, high in ranges):
                _MADVISE(start, end - start, mmap.MADV_DONTNEED)

    def _mapped_ranges(self) -> list[tuple[int, int]]:
        if self._ranges is None:
            self._ranges = []
            try:
                with open("/proc/self/maps") as maps:
                    for line in maps:
                        fields = line.split(maxsplit=5)
                        major, minor = (int(part, 16) for part in fields[3].split(":"))
                        if (os.makedev(major, minor), int(fields[4])) in self._files:
                            low, high = (int(part, 16) for part in fields[0].split("-"))
                            self._ranges.append((low, high))
            except OSError:
                pass
        return self._ranges

