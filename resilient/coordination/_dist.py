"""Process-group setup and the collectives resilient needs, with a free single-process path.

Most runs are one process; they must not pay for, or depend on, torch.distributed. So every
helper short-circuits when the world size is 1, and `init_distributed` only creates a process
group when torchrun-style environment variables describe more than one process. A group the user
created (e.g. their own `init_process_group` under torchrun) is adopted, never torn down by us.

With several processes, every collective resilient makes runs on a small gloo group of its own,
which `shutdown` destroys, joining its threads; see `_OwnGroup` for why.
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job, and whether resilient owns the process group."""

    rank: int
    world_size: int
    local_rank: int
    owns_group: bool  # we called init_process_group, so we destroy the group at the end
    # resilient's own group for its collectives (None with one process); closed by `shutdown`.
    group: _OwnGroup | None = field(default=None, compare=False, repr=False)


class _OwnGroup:
    """A gloo group that only resilient uses, so that no thread that ran its collectives outlives `shutdown`.

    Finished 2-rank jobs aborted at exit now and then ("terminate called without an active
    exception", exit code -6). gdb on an aborting rank: a gloo worker thread destroying a barrier
    work, which freed the broadcast work it had watched, which freed that broadcast's tensors, which
    took the GIL while the interpreter was finalizing; CPython ends such a thread with pthread_exit,
    and its unwinding through that noexcept code is std::terminate. Three facts make it possible:
    - gloo completes a work (`wait()` returns) before its worker thread lets go of it, so the main
      thread can run on, to finalization, while a descheduled worker still holds the last work;
    - with c10's PyObject preservation (torch 2.13), dropping a tensor's last C++ reference takes
      the GIL to release its Python object, even if Python still holds the tensor: keeping tensors
      alive from Python does not help (tested: a never-freed tensor aborts the same way);
    - gloo's barrier keeps weak pointers to the works in progress when it is queued, and c10 frees
      a work's members only with its last weak pointer, so a barrier defers those frees to itself.
    Which thread drops the last reference, and when, is gloo's business; so the fix is to leave it
    no thread. A ProcessGroupGloo joins its threads when it is destroyed (torch releases the GIL
    meanwhile), and a joined thread frees nothing later. Torch's own group cannot be ours for this:
    DDP keeps it alive past `destroy_process_group` (see `_fence_torch_group` for its works). So
    resilient runs its collectives on this group, and `close` destroys it while the interpreter is
    whole: afterwards whatever is left of its works and tensors is freed by the main thread.
    """

    def __init__(self, timeout: timedelta | None) -> None:
        options = {} if timeout is None else {"timeout": timeout}
        self._pg: dist.ProcessGroup | None = dist.new_group(backend="gloo", **options)
        # The latest asynchronous works (the step agreement's reduces): a rank that leaves alone
        # must know whether one still waits for a peer. The synchronous helpers wait for theirs.
        self._started: deque[dist.Work] = deque(maxlen=2)
        self._sides: list[_OwnGroup] = []  # groups of background threads (`side_group`), closed with this one
        self._timeout = timeout

    @property
    def pg(self) -> dist.ProcessGroup:
        if self._pg is None:
            raise RuntimeError("resilient's process group is closed: shutdown() was called")
        return self._pg

    def started(self, work: dist.Work) -> dist.Work:
        self._started.append(work)
        return work

    def side(self) -> _OwnGroup:
        """A further group of the same ranks, closed before this one (see `side_group`)."""
        group = _OwnGroup(self._timeout)
        self._sides.append(group)
        return group

    def close(self, *, together: bool) -> None:
        """Destroy the group and join its threads; with `together`, after every rank has arrived."""
        if self._pg is None:
            return
        while self._sides:
            self._sides.pop().close(together=together)
        if not together and not all(work.is_completed() for work in self._started):
            # A reduce still waits for a peer that may never come: joining its thread could block
            # until the timeout. So the group and those works are never freed; then no thread of
            # the group ever lets go of the works' tensors, and the process ends without a join.
            _never_free((self._pg, tuple(self._started)))
            self._pg = None
            return
        failure = None
        if together:
            try:
                # Every rank is done with the group before any closes its connections.
                dist.barrier(group=self._pg)
            except RuntimeError as error:  # a peer is gone (DistBackendError); still join, then say so
                # The traceback's frames hold the group: dropped so that the group dies below.
                failure = error.with_traceback(None)
        self._started.clear()
        dist.destroy_process_group(self._pg)
        self._pg = None  # the last reference: ProcessGroupGloo's destructor joins its threads now
        if failure is not None:
            raise failure


def _never_free(obj: object) -> None:
    """Leak one reference to `obj`: it outlives the interpreter, so its finalization never frees it."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _env_int(name: str, minimum: int, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"environment variable {name} is not set; torchrun and resilient's launchers set it")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"environment variable {name}={raw!r} must be >= {minimum}")
    return value


def _local_rank(rank: int) -> int:
    return _env_int("LOCAL_RANK", 0, default=rank)


def init_distributed(backend: str | None = None, timeout: timedelta | None = None) -> DistInfo:
    """Join (or adopt) the job's process group as described by torchrun's environment.

    All variables are validated before `init_process_group`, so a broken launch fails at once
    with the variable's name instead of hanging at the rendezvous. `timeout` (default: torch's)
    bounds every collective, so a dead peer ends the job instead of blocking it forever.
    """
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, got {type(backend).__name__}")
    if timeout is not None and not isinstance(timeout, timedelta):
        raise TypeError(f"timeout must be a datetime.timedelta or None, got {type(timeout).__name__}")
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        group = _OwnGroup(timeout) if world_size > 1 else None
        return DistInfo(rank, world_size, _local_rank(rank), owns_group=False, group=group)
    world_size = _env_int("WORLD_SIZE", 1, default=1)
    if world_size == 1:
        return DistInfo(0, 1, 0, owns_group=False)
    rank = _env_int("RANK", 0)
    if rank >= world_size:
        raise ValueError(f"environment variable RANK={rank} must be < WORLD_SIZE={world_size}")
    local_rank = _local_rank(rank)
    address = os.environ.get("MASTER_ADDR")
    if not address:
        raise ValueError(f"environment variable MASTER_ADDR={address!r} must name the rank-0 host")
    port = _env_int("MASTER_PORT", 1)
    if port > 65535:
        raise ValueError(f"environment variable MASTER_PORT={port} is not a TCP port (1-65535)")
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} but this PyTorch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "nccl" in backend:
        # Before the group exists, so NCCL's communicators are created on this rank's own GPU.
        torch.cuda.set_device(local_rank)
    options = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **options)
    return DistInfo(rank, world_size, local_rank, owns_group=True, group=_OwnGroup(timeout))


def side_group(info: DistInfo) -> DistInfo:
    """`info` with a gloo group of its own, for collectives that a background thread makes while
    the main thread makes others (a sharded save written during training): two threads must
    never share a group, whose collectives would pair up across threads. Every rank calls it, at
    the same point; `shutdown` closes it with resilient's group. A world of one has no
    collectives to keep apart: `info` itself."""
    _check_info(info)
    if info.world_size == 1:
        return info
    if info.group is None:
        raise RuntimeError(f"no resilient process group for world size {info.world_size}; use init_distributed()")
    return replace(info, group=info.group.side())


def _check_info(info: object) -> None:
    if not isinstance(info, DistInfo):
        raise TypeError(f"info must be the DistInfo from init_distributed(), got {type(info).__name__}")


def shutdown(info: DistInfo, *, together: bool = True) -> None:
    """Close resilient's own group, fence torch's, and destroy torch's if `init_distributed` created it.

    No thread that ran a collective may be left to free a tensor or a Python object while the
    interpreter exits (see `_OwnGroup`): closing our group joins its threads, and the fence pins
    whatever torch's gloo group (DDP's reduces) still holds. With `together` (every rank is shutting
    down at the same point) ranks first meet at a barrier on our group, so that no rank closes
    connections a peer still uses. After a crash on one rank the others are not there to meet, so
    it skips the barrier and the fence. A user's group is theirs: fenced, never destroyed.
    """
    _check_info(info)
    try:
        if info.group is not None:
            info.group.close(together=together)
            if together and dist.is_initialized():
                _fence_torch_group()
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _fence_torch_group() -> None:
    """Pin every work that torch's gloo group has not finished letting go of, for good.

    DDP's gradient reduces run on torch's group, whose threads DDP keeps alive, and they hold a
    Python object: `torch.autograd.backward` stashes a copy of the context variables in thread-local
    state, which every collective launched during backward captures, and freeing that copy takes
    the GIL. So the last backward's reduces are the same hazard as our tensors. A gloo barrier keeps
    a weak pointer to each work in progress or queued when it is called, and c10 frees a work's
    members only with its last weak pointer. A barrier that is never freed therefore pins those
    works: their threads may drop them at any moment, nothing is freed. Works finished before it
    were freed already, while the interpreter was whole. The price: the barrier, the works it pins
    and the gloo context it uses stay until the process ends (with DDP, the group does anyway).
    """
    if dist.get_backend() != dist.Backend.GLOO:
        return  # the pinning relies on gloo's barrier; other backends are left as they are
    _pin_works_in_progress().wait()


def _pin_works_in_progress(group: dist.ProcessGroup | None = None) -> dist.Work:
    """Queue a gloo barrier that is never freed: the works `group` holds now are never freed either."""
    fence = dist.barrier(group=group, async_op=True)
    assert fence is not None
    _never_free(fence)
    return fence


def _group_of(info: DistInfo) -> dist.ProcessGroup:
    if info.group is None:
        raise RuntimeError(f"no resilient process group for world size {info.world_size}; use init_distributed()")
    return info.group.pg


def all_reduce_max_async(tensor: torch.Tensor, info: DistInfo) -> dist.Work:
    """Start an element-wise MAX all-reduce of `tensor` in place; `wait()` on the work for the result."""
    _check_info(info)
    work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_group_of(info), async_op=True)
    assert info.group is not None and work is not None
    return info.group.started(work)


def broadcast_object(obj: T, info: DistInfo, src: int = 0) -> T:
    """Rank `src`'s `obj` on every rank (any picklable value); `obj` is ignored on other ranks."""
    _check_info(info)
    if not isinstance(src, int) or isinstance(src, bool) or not 0 <= src < info.world_size:
        raise ValueError(f"src must be a rank in [0, {info.world_size}), got {src!r}")
    if info.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_group_of(info))
    return box[0]


def gather_to_main(obj: T, info: DistInfo) -> list[T] | None:
    """Every rank's `obj`, in rank order, on rank 0; None on the others."""
    _check_info(info)
    if info.world_size == 1:
        return [obj]
    gathered: list[Any] | None = [None] * info.world_size if info.rank == 0 else None
    dist.gather_object(obj, gathered, dst=0, group=_group_of(info))
    return gathered

