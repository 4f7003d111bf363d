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
quantized, a tensor subclass such as a DTensor, a lazily conjugated view) raises
`NotStageable`, and the caller saves synchronously instead.
"""

from __future__ import annotations

import io
import pickle
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


def _check(tensor: torch.Tensor) -> None:
    if type(tensor) not in _PLAIN_TENSORS:
        raise NotStageable(f"a {type(tensor).__name__} (a tensor subclass)")
    if tensor.layout is not torch.strided or tensor.is_quantized:
        raise NotStageable(f"a {tensor.layout} or quantized tensor")
    if tensor.is_conj() or tensor.is_neg() or tensor.device.type == "meta":
        raise NotStageable("a lazily conjugated, negated or meta tensor")
    if tensor.requires_grad and not tensor.is_leaf:
        raise NotStageable("a tensor in an autograd graph")  # torch.save refuses it: let it say so


class Stager:
    """Copies state into buffers that the next `stage` reuses; one staged copy is alive at a time.

    Buffers are matched to storages in the order the state is walked, which is the same at every
    save of a run; a storage whose size or device changed gets a new buffer.
    """

    def __init__(self) -> None:
        self._buffers: list[torch.UntypedStorage] = []

    @property
    def nbytes(self) -> int:
        """Host memory held for staging."""
        return sum(buffer.nbytes() for buffer in self._buffers)

    def stage(self, state: Any) -> Staged:
        """A copy of `state` that training can no longer change; raises `NotStageable`."""
        tensors: list[torch.Tensor] = []
        pickled = io.BytesIO()
        _TensorsByReference(pickled, tensors).dump(state)
        copies: dict[tuple[str, int], torch.UntypedStorage] = {}  # a storage copied once however often it is used
        views: list[torch.Tensor] = []
        cuda = False
        for tensor in tensors:
            storage = tensor.untyped_storage()
            key = (str(storage.device), storage.data_ptr())
            if key not in copies:
                copies[key] = self._copy(storage, len(copies))
                cuda = cuda or storage.device.type == "cuda"
            views.append(_view_like(tensor, copies[key]))
        pickled.seek(0)
        copy = _TensorsFromList(pickled, views).load()
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        return Staged(copy, sum(storage.nbytes() for storage in copies.values()), event)

    def _copy(self, storage: torch.UntypedStorage, slot: int) -> torch.UntypedStorage:
        nbytes = storage.nbytes()
        pinned = storage.device.type == "cuda"
        if slot == len(self._buffers):
            self._buffers.append(_host_buffer(nbytes, pinned))
        elif self._buffers[slot].nbytes() != nbytes or self._buffers[slot].is_pinned() != pinned:
            self._buffers[slot] = _host_buffer(nbytes, pinned)
        buffer = self._buffers[slot]
        buffer.copy_(storage, non_blocking=pinned)
        return buffer


def _host_buffer(nbytes: int, pinned: bool) -> torch.UntypedStorage:
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned).untyped_storage()


def _view_like(tensor: torch.Tensor, storage: torch.UntypedStorage) -> torch.Tensor:
    """`tensor`'s shape, strides and offset over `storage`, as a plain tensor or a Parameter."""
    view = torch.empty(0, dtype=tensor.dtype).set_(storage, tensor.storage_offset(), tensor.size(), tensor.stride())
    if type(tensor) is torch.nn.Parameter:
        return torch.nn.Parameter(view, requires_grad=tensor.requires_grad)
    return view.requires_grad_(True) if tensor.requires_grad else view


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
