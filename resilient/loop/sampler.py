"""A drop-in `DistributedSampler` whose position survives preemption.

Resuming mid-epoch bit for bit needs two things a plain sampler cannot give: the exact order
the interrupted epoch was drawing from, and the point in it the training loop had reached. The
order is a pure function of (dataset size, replicas, rank, shuffle, seed, drop_last, epoch), the
same function `torch.utils.data.DistributedSampler` uses, so it is recomputed rather than stored.
The point reached is told to the sampler by the loop (see `ResumableSampler`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import torch
import torch.distributed as dist

from ._workers import SampleIndex, epoch_seed

# Settings that, together with the epoch, fix the per-rank order. They are checked rather than
# restored on load: the code constructing the sampler is the authority on them.
_ORDER_KEYS = ("dataset_size", "num_replicas", "shuffle", "seed", "drop_last")


def _check_int(name: str, value: object, minimum: int | None) -> int:
    # bool is an int subclass; `rank=True` is a bug, not rank 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _num_samples(dataset_size: int, num_replicas: int, drop_last: bool) -> int:
    """Per-rank epoch length, with DistributedSampler's rounding (pad up, or drop the ragged tail)."""
    if drop_last and dataset_size % num_replicas:
        return math.ceil((dataset_size - num_replicas) / num_replicas)
    return math.ceil(dataset_size / num_replicas)


class ResumableSampler(torch.utils.data.Sampler[int]):
    """`DistributedSampler`'s exact per-rank order, plus a position that can be checkpointed.

    The position is what the *training loop* consumed, reported by `Run` through
    `_note_consumed` at every step boundary, not how far `__iter__` has been read: a
    `DataLoader` with workers pulls indices several batches ahead of the loop (prefetching), so
    counting yielded indices would skip those prefetched-but-unused samples on resume.

    After `_resume_at` or `load_state_dict`, the next `__iter__` yields that epoch's order from
    the saved position on, once; the following epoch (after `set_epoch`) starts at 0 again.
    Calling `set_epoch` with the resumed epoch before iterating keeps the resume position, because
    the usual `DistributedSampler` loop calls `sampler.set_epoch(epoch)` at the top of every epoch,
    including the one being resumed.

    The state is the same on every rank (ranks step in lockstep), so it holds no rank and a
    checkpoint written with one rank's state can be loaded on any rank.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(dataset, Sized):
            raise TypeError(f"dataset must have a length (__len__), got {type(dataset).__name__}")
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be < num_replicas={self.num_replicas}, got {self.rank}")
        self.shuffle = _check_bool("shuffle", shuffle)
        self.seed = _check_int("seed", seed, None)
        self.drop_last = _check_bool("drop_last", drop_last)
        self.dataset = dataset
        self.dataset_size = len(dataset)
        self.num_samples = _num_samples(self.dataset_size, self.num_replicas, self.drop_last)
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0
        self._consumed = 0  # noted by the loop; what state_dict() reports
        self._start = 0  # where the next __iter__ begins; reset to 0 once used
        self._seed_samples = False  # set by Run when DataLoader workers load the samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next `__iter__` draws, from its first sample."""
        _check_int("epoch", epoch, 0)
        if epoch == self.epoch and self._start:
            return  # a pending resume into this very epoch: keep its position
        self.epoch = epoch
        self._start = 0
        self._consumed = 0

    def _order(self) -> list[int]:
        # Mirrors DistributedSampler.__iter__ step by step; equality is tested against it.
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            indices = list(range(self.dataset_size))
        padding = self.total_size - len(indices)
        if padding > 0:
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            del indices[self.total_size :]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        self._consumed = start
        # Computed now, not in a generator: the one-shot start is consumed when iteration begins,
        # even if the DataLoader only pulls the first index later.
        order = self._order()[start:]
        if not self._seed_samples:
            return iter(order)
        base = epoch_seed(self.seed, self.epoch)
        return (SampleIndex.of(index, base) for index in order)

    def _give_samples_seeds(self) -> None:
        """Yield `SampleIndex`es from now on, for DataLoader workers to seed each sample with."""
        self._seed_samples = True

    def __len__(self) -> int:
        return self.num_samples

    def _resume_at(self, epoch: int, consumed: int) -> None:
        """Make the next `__iter__` yield `epoch`'s order from sample `consumed` (clamped to its end)."""
        _check_int("epoch", epoch, 0)
        _check_int("consumed", consumed, 0)
        self.epoch = epoch
        self._start = self._consumed = min(consumed, self.num_samples)

    def _note_consumed(self, consumed: int) -> None:
        """Record how many of this rank's samples of the current epoch the loop has used.

        Called at every step, so it only stores. A count past the end (a short last batch counted
        as a full one) means the epoch is done and is clamped.
        """
        self._consumed = min(consumed, self.num_samples)

    def state_dict(self) -> dict[str, Any]:
        """Plain ints and bools: loads under `torch.load(weights_only=True)` and reads as JSON."""
        return {
            "epoch": self.epoch,
            "consumed": self._consumed,
            "dataset_size": self.dataset_size,
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the saved position, refusing when this sampler's order would differ mid-epoch.

        At an epoch boundary the settings may change (a new world size, a grown dataset): no
        sample of a half-read epoch would be repeated or skipped. Inside an epoch they may not.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping from state_dict(), got {type(state).__name__}")
        missing = [key for key in ("epoch", "consumed", *_ORDER_KEYS) if key not in state]
        if missing:
            raise ValueError(f"state is missing {', '.join(missing)}; was it made by ResumableSampler.state_dict()?")
        epoch = _check_int("state['epoch']", state["epoch"], 0)
        consumed = _check_int("state['consumed']", state["consumed"], 0)
        saved_length = _num_samples(
            _check_int("state['dataset_size']", state["dataset_size"], 0),
            _check_int("state['num_replicas']", state["num_replicas"], 1),
            _check_bool("state['drop_last']", state["drop_last"]),
        )
        if consumed >= saved_length:
            consumed = self.num_samples  # the saved epoch was finished; it stays finished here
        elif consumed > 0:
            changed = [
                f"{key} (checkpoint {state[key]!r}, here {getattr(self, key)!r})"
                for key in _ORDER_KEYS
                if state[key] != getattr(self, key)
            ]
            if changed:
                raise ValueError(
                    f"cannot resume epoch {epoch} at sample {consumed}: the sample order depends on "
                    f"{', '.join(changed)}; keep them unchanged or resume from an epoch-boundary checkpoint"
                )
        self._resume_at(epoch, consumed)
