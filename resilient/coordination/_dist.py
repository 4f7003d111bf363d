"""Process-group setup and the collectives resilient needs, with a free single-process path.

Most runs are one process; they must not pay for, or depend on, torch.distributed. So every
helper short-circuits when the world size is 1, and `init_distributed` only creates a process
group when torchrun-style environment variables describe more than one process. A group the user
created (e.g. their own `init_process_group` under torchrun) is adopted, never torn down by us.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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
        rank = dist.get_rank()
        return DistInfo(rank, dist.get_world_size(), _local_rank(rank), owns_group=False)
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
    return DistInfo(rank, world_size, local_rank, owns_group=True)


def _check_info(info: object) -> None:
    if not isinstance(info, DistInfo):
        raise TypeError(f"info must be the DistInfo from init_distributed(), got {type(info).__name__}")


def shutdown(info: DistInfo, *, together: bool = True) -> None:
    """Destroy the process group if `init_distributed` created it; a user's group is theirs.

    With `together` (every rank is shutting down at the same point) ranks first meet at a
    barrier: a rank that tears its gloo connections down while a peer still uses them makes
    that peer abort ("terminate called without an active exception"). After a crash on one
    rank the others are not there to meet, so it skips the barrier.
    """
    _check_info(info)
    if info.owns_group and dist.is_initialized():
        if together and info.world_size > 1:
            dist.barrier()
        dist.destroy_process_group()


def broadcast_object(obj: T, info: DistInfo, src: int = 0) -> T:
    """Rank `src`'s `obj` on every rank (any picklable value); `obj` is ignored on other ranks."""
    _check_info(info)
    if not isinstance(src, int) or isinstance(src, bool) or not 0 <= src < info.world_size:
        raise ValueError(f"src must be a rank in [0, {info.world_size}), got {src!r}")
    if info.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_to_main(obj: T, info: DistInfo) -> list[T] | None:
    """Every rank's `obj`, in rank order, on rank 0; None on the others."""
    _check_info(info)
    if info.world_size == 1:
        return [obj]
    gathered: list[Any] | None = [None] * info.world_size if info.rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def barrier(info: DistInfo) -> None:
    """Wait until every rank arrives here."""
    _check_info(info)
    if info.world_size > 1:
        dist.barrier()
