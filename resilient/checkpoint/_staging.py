"""Staging: a private copy of the state to save, in host buffers reused from one save to the next.

An asynchronous save may only return to training once nothing it will write can change under
it: the next optimizer step updates the weights in place. So the state is copied first, and
only the copy is written in the background. The copy is the whole stall a save costs training,
which is why it is made storage by storage into buffers kept for the run (no allocation, no
page faults after the first save; pinned, and filled by non-blocking copies, for CUDA tensors),
and why tensors that share a storage (tied weights, views) share it in the copy too, exactly as
`torch.save` would have written them.

The rest of the state (numbers, strings, user objects) is copied by a pickle round trip in which
every tensor travels by reference: whatever `torch.save` could pickle, however deeply a tensor
is nested, is found and staged. A tensor kind the copy cannot reproduce faithfully (sparse,
quantized, a tensor subclass, a lazily conjugated view) raises `NotStageable`, and the caller
saves synchronously instead. A DTensor (sharded state, FSDP2) is staged by its local shard
(`split_dtensors`): each rank copies the part it holds and makes the copy a DTensor again.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


class NotStageable(Exception):
    """The state holds something a staged copy would not reproduce: save it synchronously."""


@dataclass
class Staged:
    """A staged copy: `state` to write once `ready()` returns (its device copies are done)."""

    state: Any
    nbytes: int  # bytes of tensor storage copied
    _event: Any = None  # the CUDA event recorded after the non-blocking copies, if any

    def ready(self) -> None:
        """Wait for the device-to-host copies (from the writer's thread; the training goes on)."""
        if self._event is not None:
            self._event.synchronize()


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
_TOUCH_CHUNK = 64 * 2**20  # how much of a new buffer is touched between looks at `cancelled`


def _check(tensor: torch.Tensor) -> None:
    if type(tensor) not in _PLAIN_TENSORS:
        raise NotStageable(f"a {type(tensor).__name__} (a tensor subclass)")
    if tensor.layout is not torch.strided or tensor.is_quantized:
        raise NotStageable(f"a {tensor.layout} or quantized tensor")
    if tensor.is_conj() or tensor.is_neg() or tensor.device.type == "meta":
        raise NotStageable("a lazily conjugated, negated or meta tensor")
    if tensor.requires_grad and not tensor.is_leaf:
        raise NotStageable("a tensor in an autograd graph")  # torch.save refuses it: let it say so


Kind = tuple[int, bool]  # a buffer's size in bytes, and whether it is pinned (for a CUDA storage)


class Stager:
    """Copies state into host buffers that the next `stage` reuses; one staged copy is alive at a time.

    Buffers are pooled by size: a storage takes a free buffer of its size, or a new one; after a
    stage, buffers no storage took are freed. `reserve` makes them ahead of the first save, so
    that neither its page faults nor (for CUDA) pinning the memory stall training then.
    """

    def __init__(self) -> None:
        self._pool: dict[Kind, list[torch.UntypedStorage]] = {}

    @property
    def nbytes(self) -> int:
        """Host memory held for staging."""
        return sum(nbytes * len(buffers) for (nbytes, _), buffers in self._pool.items())

    def stage(self, state: Any) -> Staged:
        """A copy of `state` that training can no longer change; raises `NotStageable`."""
        tensors, pickled = _walk(state)
        storages = _storages(tensors)
        taken: dict[Kind, int] = {}
        copies = {key: self._buffer(_kind(storage), taken) for key, storage in storages.items()}
        for key, storage in storages.items():
            copies[key].copy_(storage, non_blocking=copies[key].is_pinned())
        views = [_view_like(tensor, copies[_key(tensor.untyped_storage())]) for tensor in tensors]
        for kind, buffers in self._pool.items():
            del buffers[taken.get(kind, 0):]  # what this state no longer needs
        copy = _TensorsFromList(pickled, views).load()
        event = None
        if any(storage.device.type == "cuda" for storage in storages.values()):
            event = torch.cuda.Event()
            event.record()
        return Staged(copy, sum(storage.nbytes() for storage in copies.values()), event)

    def kinds(self, state: Any) -> list[Kind]:
        """The buffers staging `state` needs (cheap: walks it, copies nothing); raises `NotStageable`."""
        tensors, _ = _walk(state)
        return [_kind(storage) for storage in _storages(tensors).values()]

    def reserve(self, kinds: list[Kind], cancelled: Callable[[], bool] = lambda: False) -> None:
        """Make (and touch) the buffers `kinds` need that the pool lacks; meant for a background thread.

        Stops soon after `cancelled()` turns True (between chunks of a buffer's pages): a run
        that stops right after it started must not wait for buffers it will never use.
        """
        taken: dict[Kind, int] = {}
        for kind in kinds:
            if cancelled():
                return
            made = len(self._pool.get(kind, ())) <= taken.get(kind, 0)
            buffer = self._buffer(kind, taken)
            if made and not kind[1]:
                _touch(buffer, cancelled)

    def _buffer(self, kind: Kind, taken: dict[Kind, int]) -> torch.UntypedStorage:
        buffers = self._pool.setdefault(kind, [])
        index = taken[kind] = taken.get(kind, 0) + 1
        if index > len(buffers):
            nbytes, pinned = kind
            buffers.append(torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned).untyped_storage())
        return buffers[index - 1]


def _touch(buffer: torch.UntypedStorage, cancelled: Callable[[], bool]) -> None:
    """Fault a new buffer's pages in now, not in the copy that training waits for, a chunk at a time."""
    flat = torch.empty(0, dtype=torch.uint8).set_(buffer)
    for start in range(0, buffer.nbytes(), _TOUCH_CHUNK):
        if cancelled():
            return
        flat[start : start + _TOUCH_CHUNK].fill_(0)


def _key(storage: torch.UntypedStorage) -> tuple[str, int]:
    return str(storage.device), storage.data_ptr()


def _kind(storage: torch.UntypedStorage) -> Kind:
    return storage.nbytes(), storage.device.type == "cuda"


def _walk(state: Any) -> tuple[list[torch.Tensor], io.BytesIO]:
    """Every tensor in `state` once, and `state` pickled with those tensors left out."""
    tensors: list[torch.Tensor] = []
    pickled = io.BytesIO()
    _TensorsByReference(pickled, tensors).dump(state)
    pickled.seek(0)
    return tensors, pickled


def _storages(tensors: list[torch.Tensor]) -> dict[tuple[str, int], torch.UntypedStorage]:
    """The storages under `tensors`, each once however many tensors share it."""
    storages: dict[tuple[str, int], torch.UntypedStorage] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages.setdefault(_key(storage), storage)
    return storages


def _view_like(tensor: torch.Tensor, storage: torch.UntypedStorage) -> torch.Tensor:
    """`tensor`'s shape, strides and offset over `storage`, as a plain tensor or a Parameter."""
    view = torch.empty(0, dtype=tensor.dtype).set_(storage, tensor.storage_offset(), tensor.size(), tensor.stride())
    if type(tensor) is torch.nn.Parameter:
        return torch.nn.Parameter(view, requires_grad=tensor.requires_grad)
    return view.requires_grad_(True) if tensor.requires_grad else view


@dataclass
class _LocalShard:
    """A DTensor's local shard, standing in for it while a state is staged."""

    index: int  # of its DTensor's layout, in the list `split_dtensors` keeps
    local: torch.Tensor


def split_dtensors(state: Any) -> tuple[Any, Callable[[Any], Any]]:
    """`state` (dicts, lists and tuples, as DCP's state dicts are) with each DTensor replaced by
    its local shard, a plain tensor that `Stager.stage` copies; and the function that makes the
    shards of a staged copy DTensors again, with the same mesh, placements, shape and strides.

    Rebuilding talks to no other rank, so it may run in a background thread.
    """
    from torch.distributed.tensor import DTensor  # loaded already where DTensors exist

    layouts: list[tuple[Any, Any, torch.Size, tuple[int, ...]]] = []

    def split(obj: Any) -> Any:
        if isinstance(obj, DTensor):
            layouts.append((obj.device_mesh, obj.placements, obj.shape, obj.stride()))
            return _LocalShard(len(layouts) - 1, obj.to_local())
        return _map(obj, split)

    def join(obj: Any) -> Any:
        if isinstance(obj, _LocalShard):
            mesh, placements, shape, stride = layouts[obj.index]
            return DTensor.from_local(obj.local, mesh, placements, run_check=False, shape=shape, stride=stride)
        return _map(obj, join)

    return split(state), join


def _map(obj: Any, each: Callable[[Any], Any]) -> Any:
    """`obj` with `each` applied to the items of its dicts (as plain dicts: a state dict is often
    an OrderedDict), lists and tuples; anything else as it is."""
    if isinstance(obj, dict):
        return {key: each(value) for key, value in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(each(value) for value in obj)
    return obj


class _TensorsByReference(pickle.Pickler):
    """Pickles everything but tensors, which it lists and refers to by their index."""

    def __init__(self, file: io.BytesIO, tensors: list[torch.Tensor]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._tensors = tensors
        self._index: dict[int, int] = {}

    def persistent_id(self, obj: Any) -> int | None:
        if not isinstance(obj, torch.Tensor):
            return None
        index = self._index.get(id(obj))
        if index is None:
            _check(obj)
            index = self._index[id(obj)] = len(self._tensors)
            self._tensors.append(obj)
        return index


class _TensorsFromList(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, views: list[torch.Tensor]) -> None:
        super().__init__(file)
        self._views = views

    def persistent_load(self, pid: Any) -> torch.Tensor:
        return self._views[pid]
