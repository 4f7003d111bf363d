"""A DCP storage reader that reads each shard file once, verifying it as it goes.

DCP's own `FileSystemReader` loads each stored tensor with `torch.load` into a fresh tensor and
copies that into the state dict's: two passes over memory, plus the kernel zeroing the fresh
pages. A resume that first hashed every shard file (the checksum the manifest vouches for) made
it a third pass. This reader reads each stored tensor's bytes straight into the tensor that
receives them (one ``preadv`` per MiB, from the page cache or the disk), and hashes each MiB of
the files this rank verifies right after it lands, while it is still in the processor's cache;
what no tensor receives (zip headers, pickles, tensors another rank loads) is hashed on the way
past, so every byte of those files is hashed, once and in order, and compared with the manifest
when the file ends. A mismatch raises `CorruptCheckpointError` naming the file, which DCP hands
to every rank.

Verification therefore ends after tensors were written: a caller that verifies this way must
treat the targets as overwritten when the checkpoint turns out damaged (see
`loop/_resume.py`). Only values checked by then are unpickled: tensors' own records are read
through ``torch.load(map_location="meta", weights_only=True)`` (shape, strides and dtype; no
data), and other values (DCP's ``BYTE_IO`` items) go to the planner's `load_bytes`, which loads
them safely (see `_sharded._Planner`).

What this relies on of DCP beyond its public API: each entry of the metadata's
``storage_data`` (DCP's ``_StorageInfo``) has the fields ``relative_path``, ``offset`` and
``length`` (the item is a `torch.save` stream at that place in that file), and no
``transform_descriptors`` (DCP's experimental extensions, which our writer never uses: an
entry with one is refused). Of `torch.save`'s format, only that it is a zip file (stdlib
`zipfile` finds each record) whose records are stored uncompressed.
"""

from __future__ import annotations

import ctypes
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
import xxhash
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem

from ._errors import CandidateRefused, CheckpointError, CorruptCheckpointError
from ._files import check_length, open_checkpoint, open_member
from ._manifest import FileEntry
from ._read import check_size, corrupt

_CHUNK = 1024 * 1024  # read and hashed at once: stays in a core's cache between the two


class ShardReader(dcp.FileSystemReader):
    """DCP's reader of the sharded checkpoint at `path`, with its `metadata` read (and checked)
    already; the files named in `verify` (with the entries the manifest has for them) are read
    whole and hashed. `read_data` is the public method every storage reader implements.

    A rank that has refused the checkpoint (`refusal`) raises it, as a `CandidateRefused`, from
    `set_up_storage_reader`: the first step of DCP's load plan that is the reader's, whose
    failure DCP gathers and hands to every rank before any rank reads (a failing
    ``read_metadata`` would instead be retried and logged by DCP as a missing file).
    """

    def __init__(self, path: Path, metadata: Metadata | None, verify: Mapping[str, FileEntry],
                 refusal: Exception | None = None) -> None:
        super().__init__(path)
        self._root = path
        self._metadata = metadata if metadata is not None else Metadata(state_dict_metadata={}, storage_data={})
        self._verify = dict(verify)
        self._refusal = refusal

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if self._metadata.storage_meta is None:
            self._metadata.storage_meta = StorageMeta()
        self._metadata.storage_meta.load_id = self.load_id
        return self._metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if self._refusal is not None:
            raise CandidateRefused([self._refusal])
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> torch.futures.Future[None]:
        by_file: dict[str, list[ReadItem]] = {}
        for item in plan.items:
            by_file.setdefault(self._place(item)[0], []).append(item)
        failure: Exception | None = None
        with open_checkpoint(self._root) as directory:
            for name in sorted(by_file.keys() | self._verify.keys()):
                what = f"checkpoint {self._root}: payload file {name}"
                entry = self._verify.get(name)
                checksum = None
                try:
                    with open_member(directory, name, what) as (fd, size):
                        if entry is not None:
                            check_size(size, entry, what)
                        file = _File(fd, size, what, hashed=entry is not None)
                        try:
                            if failure is None:
                                for item in sorted(by_file.get(name, ()), key=lambda item: self._place(item)[1]):
                                    self._read_item(file, item, planner)
                        except Exception as error:  # bytes another rank verifies may be what is damaged
                            failure = error
                        if entry is not None:
                            checksum = file.finish()
                except CheckpointError as error:  # gone or resized since the sizes were checked: damage too
                    raise CorruptCheckpointError(str(error)) from None
                if entry is not None and checksum != entry.checksum:
                    raise corrupt(what)  # the cause of any failure: reported first
        if failure is not None:
            raise failure
        done: torch.futures.Future[None] = torch.futures.Future()
        done.set_result(None)
        return done

    def _place(self, item: ReadItem) -> tuple[str, int, int]:
        info = self.storage_data[item.storage_index]
        if getattr(info, "transform_descriptors", None):
            raise CheckpointError(f"checkpoint {self._root}: {item.storage_index.fqn} is stored through DCP "
                                  f"extensions {info.transform_descriptors}, which this reader does not apply")
        return info.relative_path, info.offset, info.length

    def _read_item(self, file: _File, item: ReadItem, planner: LoadPlanner) -> None:
        _, offset, length = self._place(item)
        if item.type == LoadItemType.BYTE_IO:
            value = bytearray(length)
            file.read_into(offset, memoryview(value))
            planner.load_bytes(item, io.BytesIO(value))
            return
        window = _Window(file.fd, offset, length)
        saved = torch.load(window, map_location="meta", weights_only=True)
        if not isinstance(saved, torch.Tensor):
            raise CheckpointError(f"{file.what}: {item.storage_index.fqn} holds {type(saved).__name__}, not a tensor")
        record = offset + _record_offset(window, saved.untyped_storage().nbytes(), file.what)
        source = saved
        for dim, (start, size) in enumerate(zip(item.storage_offsets, item.lengths)):
            if size < source.size(dim):
                source = source.narrow(dim, start, size)
        target = planner.resolve_tensor(item).detach()
        if target.size() != source.size():
            raise CheckpointError(f"{file.what}: {item.storage_index.fqn} has size {tuple(source.size())} where "
                                  f"{tuple(target.size())} is loaded")
        itemsize = source.element_size()
        if (target.device.type == "cpu" and target.dtype == source.dtype and target.is_contiguous()
                and source.is_contiguous()):
            file.read_into(record + source.storage_offset() * itemsize, _writable(target))
        else:  # another layout, dtype or device: through a buffer of the stored span, as DCP copies
            last = source.storage_offset() + sum((n - 1) * s for n, s in zip(source.size(), source.stride()))
            first = source.storage_offset()
            span = torch.empty((last + 1 - first) * itemsize if source.numel() else 0, dtype=torch.uint8)
            file.read_into(record + first * itemsize, _writable(span))
            target.copy_(span.view(source.dtype).as_strided(source.size(), source.stride()))
        planner.commit_tensor(item, target)


class _File:
    """One open shard file, read at given places; if `hashed`, every byte of it is hashed in
    order, once: what a read passes over is hashed on the way (`_hash_until`)."""

    def __init__(self, fd: int, size: int, what: str, *, hashed: bool) -> None:
        self.fd, self.what = fd, what
        self._size = size
        self._hasher = xxhash.xxh3_128() if hashed else None
        self._hashed = 0  # bytes of the file hashed so far, from its start
        self._scratch: memoryview | None = None

    def read_into(self, offset: int, view: memoryview) -> None:
        """Fill `view` with the file's bytes at `offset`, hashing those not hashed yet."""
        if self._hasher is None or offset + len(view) <= self._hashed:
            self._pread(view, offset)
            return
        self._hash_until(offset)
        for start in range(0, len(view), _CHUNK):
            chunk = view[start : start + _CHUNK]
            self._pread(chunk, offset + start)
            fresh = offset + start + len(chunk) - self._hashed
            if fresh > 0:
                self._hasher.update(chunk[len(chunk) - fresh :])
                self._hashed += fresh

    def finish(self) -> str:
        """The checksum of the whole file, hashing what no read reached; refuses a longer file."""
        assert self._hasher is not None
        self._hash_until(self._size)
        check_length(self._size + len(os.pread(self.fd, 1, self._size)), self._size, self.what)
        return self._hasher.hexdigest()

    def _hash_until(self, offset: int) -> None:
        assert self._hasher is not None
        if self._scratch is None and offset > self._hashed:
            self._scratch = memoryview(bytearray(min(_CHUNK, self._size)))
        while self._hashed < offset:
            assert self._scratch is not None
            chunk = self._scratch[: min(_CHUNK, offset - self._hashed)]
            self._pread(chunk, self._hashed)
            self._hasher.update(chunk)
            self._hashed += len(chunk)

    def _pread(self, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got == 0:  # the file ended early: it shrank since its size was checked, or DCP's metadata lies
                raise CorruptCheckpointError(f"{self.what} ends before byte {offset + len(view)} (it had {self._size})")
            done += got


class _Window(io.RawIOBase):
    """The bytes [offset, offset + length) of a file, as a seekable read-only file: one item's
    `torch.save` stream, for `torch.load` and `zipfile` to read headers from (never the data)."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd, self._offset, self._length = fd, offset, length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = max(0, base + position)
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = max(0, min(len(view), self._length - self._position))
        got = os.preadv(self._fd, [view[:wanted]], self._offset + self._position) if wanted else 0
        self._position += got
        return got


def _record_offset(window: _Window, nbytes: int, what: str) -> int:
    """Where, in a `torch.save` stream of one tensor, its storage's bytes begin: its one data
    record, stored uncompressed, of `nbytes` bytes (the tensor's storage, as `torch.load` saw it)."""
    window.seek(0)
    with zipfile.ZipFile(window) as archive:
        records = [info for info in archive.infolist() if info.filename.split("/")[-2:-1] == ["data"]]
        if len(records) != 1 or records[0].compress_type != zipfile.ZIP_STORED or records[0].file_size != nbytes:
            raise CheckpointError(f"{what}: a stored tensor is not one uncompressed record of {nbytes} bytes")
        header = records[0].header_offset
    window.seek(header)
    local = window.read(30)  # a zip local file header: its name's and extra field's lengths at 26 and 28
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{what}: a stored tensor's zip record header is damaged")
    return header + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")


def _writable(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, writable in place: what ``preadv`` fills."""
    if tensor.numel() == 0:
        return memoryview(bytearray())
    return memoryview((ctypes.c_char * (tensor.numel() * tensor.element_size())).from_address(tensor.data_ptr())).cast("B")
