"""xxh3-128 checksums, computed while bytes are written and re-computed when they are read.

xxh3 hashes at tens of GB/s, far faster than any disk (see benchmarks/checksum.py), so hashing
every checkpoint byte costs nothing measurable; sha256 would be slower than the disk itself.
It detects corruption, not tampering: a forger recomputes it, which is why readers also check
names and file types (see `_files`) and load with ``weights_only`` by default.
"""

from __future__ import annotations

import mmap
import os
from typing import BinaryIO

import xxhash

from ._writeback import Writeback, chunks

ALGORITHM = "xxh3_128"
_CHUNK = 16 * 1024 * 1024


def checksum_bytes(data: bytes | memoryview) -> str:
    """Checksum of an in-memory buffer, e.g. a payload file read once for loading."""
    return xxhash.xxh3_128_hexdigest(data)


def checksum_mapped(fd: int, size: int) -> str:
    """Checksum of the first `size` bytes of `fd`, read through a memory map of it.

    Mapped, the page cache is hashed where it lies: no copy into a buffer, which doubles the
    speed of a warm resume. Each chunk is unmapped from this process once hashed (the page cache
    keeps it for the load that follows), so the resident set never grows by more than a chunk.
    """
    if size == 0:
        return checksum_bytes(b"")
    hasher = xxhash.xxh3_128()
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mapping, memoryview(mapping) as view:
        for start in range(0, size, _CHUNK):
            length = min(_CHUNK, size - start)
            hasher.update(view[start : start + length])
            mapping.madvise(mmap.MADV_DONTNEED, start, length)
    return hasher.hexdigest()


class HashingWriter:
    """A write-only file object that hashes and counts each chunk on its way to `file`, and has
    the disk start writing each chunk as soon as it is in the page cache (`Writeback`).

    `torch.save` streams its zip records through `write`, so the checksum and size come out of
    the single serialization pass: no second read of a file that may be many gigabytes. A record
    comes whole (a tensor's storage in one call), so it is cut into chunks: the disk writes one
    while the next is hashed and copied, instead of waiting for the fsync at the end.

    torch turns a failed write into its own error ("unexpected pos") once it has written the
    rest of its zip records, which hides the errno (ENOSPC, EFBIG); `failure` keeps the first
    OSError a write raised, so the caller can report that instead. Give it an unbuffered
    file: a buffered one would raise the same error again when closed, hiding this one.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._hasher = xxhash.xxh3_128()
        self._writeback = Writeback(file.fileno())
        self.size = 0
        self.failure: OSError | None = None

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        for chunk in chunks(view):
            self._hasher.update(chunk)
            written = 0
            try:
                while written < chunk.nbytes:  # an unbuffered file may take part of it (a nearly full disk)
                    written += self._file.write(chunk[written:])
            except OSError as error:
                self.failure = self.failure or error
                raise
            self.size += written
            self._writeback.written(self.size)
        return view.nbytes

    def flush(self) -> None:
        self._file.flush()

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    def sync(self) -> None:
        """Flush Python's buffer and the OS cache: the manifest may only vouch for durable bytes."""
        self._file.flush()
        os.fsync(self._file.fileno())
