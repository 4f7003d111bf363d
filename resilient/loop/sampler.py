"""A drop-in `DistributedSampler` whose position survives preemption.

Resuming mid-epoch bit for bit needs two things a plain sampler cannot give: the exact order
the interrupted epoch was drawing from, and the point in it the training loop had reached. The
order is a pure function of (dataset size, replicas, rank, shuffle, seed, drop_last, epoch), the
same function `torch.utils.data.DistributedSampler` uses, so it is recomputed rather than stored.
The point reached is told to the sampler by the loop (see `ResumableSampler`).

A job may come back on another number of ranks in the middle of an epoch. The samples the old
ranks consumed are then a prefix of that epoch's dealt-out order (ranks step in lockstep), so
the rest is dealt out again among the new ranks: no sample of the epoch is skipped or seen
twice, apart from the padding that gives every rank as many samples (as DistributedSampler
pads). The order stays a pure function of the settings, the epoch and the list of these
changes (`segments`: where in the epoch each world size took over), which the state records.
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


def _deal(indices: list[int], num_replicas: int, drop_last: bool) -> list[int]:
    """`indices` cut or padded (repeating its head) to a multiple of `num_replicas`, as DistributedSampler does."""
    if drop_last:
        return indices[: len(indices) - len(indices) % num_replicas]
    padding = -len(indices) % num_replicas
    if padding and indices:
        indices = indices + (indices * math.ceil(padding / len(indices)))[:padding]
    return indices


def _dealt_size(size: int, num_replicas: int, drop_last: bool) -> int:
    """len(_deal(...)) of `size` indices, without them: DistributedSampler's rounding (pad up, or drop the ragged tail)."""
    return size - size % num_replicas if drop_last else size + (-size % num_replicas if size else 0)


def _epoch_end(dataset_size: int, drop_last: bool, segments: list[tuple[int, int]]) -> int:
    """Where an epoch dealt out by these `segments` ends, per rank, in the loop's positions."""
    size = _dealt_size(dataset_size, segments[0][0], drop_last)
    for (replicas, start), (next_replicas, next_start) in zip(segments, segments[1:]):
        size = _dealt_size(max(0, size - (next_start - start) * replicas), next_replicas, drop_last)
    replicas, start = segments[-1]
    return start + size // replicas


def _check_segments(state: Mapping[str, Any]) -> list[tuple[int, int]]:
    """The saved world sizes of the epoch: [(num_replicas, position)], from 0, ending with the saved world size."""
    raw = state.get("segments", [[state["num_replicas"], 0]])
    if not isinstance(raw, (list, tuple)) or not raw or len(raw) > 1000:
        raise ValueError(f"state['segments'] must be a list of [num_replicas, position] pairs, got {raw!r:.80}")
    segments = []
    for pair in raw:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"state['segments'] holds {pair!r:.40}, not a [num_replicas, position] pair")
        segments.append((_check_int("state['segments'] replicas", pair[0], 1),
                         _check_int("state['segments'] position", pair[1], 0)))
    positions = [position for _, position in segments]
    if positions[0] != 0 or positions != sorted(positions) or segments[-1][0] != state["num_replicas"]:
        raise ValueError(f"state['segments'] {raw!r:.80} must start at 0, grow, and end with num_replicas")
    return segments


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
        self.num_samples = _epoch_end(self.dataset_size, self.drop_last, [(self.num_replicas, 0)])
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0
        self._end = self.num_samples  # where this epoch ends, per rank (see `_length`)
        self._consumed = 0  # noted by the loop; what state_dict() reports
        self._start = 0  # where the next __iter__ begins; reset to 0 once used
        # This epoch's world sizes, as (num_replicas, the position at which it took over), the last
        # one this sampler's; empty (the same as [(num_replicas, 0)]) unless the job came back on
        # another number of ranks in the middle of the epoch.
        self._segments: list[tuple[int, int]] = []
        self._seed_samples = False  # set by Run when DataLoader workers load the samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next `__iter__` draws, from its first sample."""
        _check_int("epoch", epoch, 0)
        if epoch == self.epoch and self._start:
            return  # a pending resume into this very epoch: keep its position
        self.epoch = epoch
        self._start = 0
        self._consumed = 0
        self._segments = []
        self._end = self.num_samples

    def _order(self) -> list[int]:
        """This rank's order for the epoch, from the position its current world size took over."""
        # Mirrors DistributedSampler.__iter__ step by step; equality is tested against it.
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            indices = list(range(self.dataset_size))
        segments = self._segments or [(self.num_replicas, 0)]
        indices = _deal(indices, segments[0][0], self.drop_last)
        for (replicas, start), (next_replicas, next_start) in zip(segments, segments[1:]):
            indices = _deal(indices[(next_start - start) * replicas :], next_replicas, self.drop_last)
        return indices[self.rank :: self.num_replicas]

    def _taken_over(self) -> int:
        """The position in this epoch (per rank, as the loop counts) at which this world size took over."""
        return self._segments[-1][1] if self._segments else 0

    def _length(self) -> int:
        """This epoch's length in positions: shorter or longer than `num_samples` after a change of world size."""
        return _epoch_end(self.dataset_size, self.drop_last, self._segments or [(self.num_replicas, 0)])

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        self._consumed = start
        # Computed now, not in a generator: the one-shot start is consumed when iteration begins,
        # even if the DataLoader only pulls the first index later.
        order = self._order()[start - self._taken_over() :]
        if not self._seed_samples:
            return iter(order)
        base = epoch_seed(self.seed, self.epoch)
        return (SampleIndex.of(index, base) for index in order)

    def _give_samples_seeds(self) -> None:
        """Yield `SampleIndex`es from now on, for DataLoader workers to seed each sample with."""
        self._seed_samples = True

    def __len__(self) -> int:
        return self._length()

    def _resume_at(self, epoch: int, consumed: int, segments: list[tuple[int, int]] | None = None) -> None:
        """Make the next `__iter__` yield `epoch`'s order from sample `consumed` (clamped to its end);
        `segments` as the state says, else those of the epoch already set (none for another epoch)."""
        _check_int("epoch", epoch, 0)
        _check_int("consumed", consumed, 0)
        if segments is None:
            segments = self._segments if epoch == self.epoch else []
        self.epoch = epoch
        self._segments = [] if segments == [(self.num_replicas, 0)] else segments
        self._end = self._length()
        self._start = self._consumed = min(consumed, self._end)

    def _note_consumed(self, consumed: int) -> None:
        """Record how many of this rank's samples of the current epoch the loop has used.

        Called at every step, so it only stores. A count past the end (a short last batch counted
        as a full one) means the epoch is done and is clamped.
        """
        self._consumed = min(consumed, self._end)

    def state_dict(self) -> dict[str, Any]:
        """Plain ints, bools and lists: loads under `torch.load(weights_only=True)` and reads as JSON."""
        state = {
            "epoch": self.epoch,
            "consumed": self._consumed,
            "dataset_size": self.dataset_size,
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }
        if self._segments:
            state["segments"] = [list(segment) for segment in self._segments]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the saved position, refusing when this sampler's order would differ mid-epoch.

        At an epoch boundary the settings may change (a new world size, a grown dataset): no
        sample of a half-read epoch would be repeated or skipped. Inside an epoch only the world
        size may: the rest of the epoch is dealt out among the new ranks (a new segment).
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping from state_dict(), got {type(state).__name__}")
        missing = [key for key in ("epoch", "consumed", *_ORDER_KEYS) if key not in state]
        if missing:
            raise ValueError(f"state is missing {', '.join(missing)}; was it made by ResumableSampler.state_dict()?")
        epoch = _check_int("state['epoch']", state["epoch"], 0)
        consumed = _check_int("state['consumed']", state["consumed"], 0)
        _check_int("state['num_replicas']", state["num_replicas"], 1)
        segments = _check_segments(state)
        saved_end = _epoch_end(_check_int("state['dataset_size']", state["dataset_size"], 0),
                               _check_bool("state['drop_last']", state["drop_last"]), segments)
        changed = [
            f"{key} (checkpoint {state[key]!r}, here {getattr(self, key)!r})"
            for key in _ORDER_KEYS
            if key != "num_replicas" and state[key] != getattr(self, key)
        ]
        if consumed >= saved_end and changed:
            consumed, segments = self.num_samples, []  # the saved epoch was finished; it stays finished here
        elif consumed > 0:
            # A finished epoch too, on another world size, ends in a segment of nothing left: the
            # loop then puts the sampler at its own count of batches, in the saved ranks' positions.
            if changed:
                raise ValueError(
                    f"cannot resume epoch {epoch} at sample {consumed}: the sample order depends on "
                    f"{', '.join(changed)}; keep them unchanged or resume from an epoch-boundary checkpoint"
                )
            if segments[-1][0] != self.num_replicas:
                segments.append((self.num_replicas, consumed))
        else:
            segments = []
        self._resume_at(epoch, consumed, segments)
