"""Putting a data loader back at the batch where the loop stopped.

Three ways, best first: a `ResumableSampler` inside a DataLoader is told to start at the sample
the loop had reached (no data is read twice); a loader the user tracked (e.g. torchdata's
StatefulDataLoader) restored its own position; anything else is fast-forwarded by iterating and
discarding batches, which is correct for a deterministic loader but costs the reading time, so
it warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .sampler import ResumableSampler


@dataclass(frozen=True)
class LoaderPosition:
    """How Run keeps one loader's position in step with the batches the loop consumed."""

    sampler: ResumableSampler | None
    batch_size: int | None
    self_restoring: bool
    persistent: bool  # a DataLoader keeping its workers (and their seeds) from one epoch to the next

    @classmethod
    def of(cls, loader: Iterable[Any], tracked: Iterable[object]) -> LoaderPosition:
        sampler = getattr(loader, "sampler", None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        if not isinstance(sampler, ResumableSampler):
            sampler = getattr(batch_sampler, "sampler", None)
        batch_size = getattr(loader, "batch_size", None) or getattr(batch_sampler, "batch_size", None)
        if not isinstance(sampler, ResumableSampler) or not isinstance(batch_size, int):
            sampler, batch_size = None, None
        self_restoring = any(obj is loader for obj in tracked)
        persistent = bool(getattr(loader, "persistent_workers", False) and getattr(loader, "num_workers", 0))
        return cls(sampler, batch_size, self_restoring, persistent)

    def seed_worker_samples(self, loader: Iterable[Any]) -> None:
        """With workers, let the sampler hand out per-sample seeds (see `_workers.py`)."""
        if self.sampler is not None and getattr(loader, "num_workers", 0):
            self.sampler._give_samples_seeds()

    def start_epoch(self, loader: Iterable[Any], epoch: int) -> None:
        """Tell a DistributedSampler-like sampler which epoch's order to draw (users often forget)."""
        for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    def iterate_from(self, loader: Iterable[Any], epoch: int, consumed_batches: int) -> Iterator[Any]:
        """An iterator over `loader` that starts after `consumed_batches` batches of this epoch."""
        if consumed_batches == 0 or self.self_restoring:
            return iter(loader)
        if self.sampler is not None:
            assert self.batch_size is not None
            self.sampler._resume_at(epoch, consumed_batches * self.batch_size)
            return iter(loader)
        warnings.warn(
            f"{type(loader).__name__} cannot resume mid-epoch, so {consumed_batches} batches are read "
            "and discarded to get back to where the run stopped; use resilient.ResumableSampler "
            "(or track a loader that has state_dict()) to skip them without reading",
            stacklevel=4,
        )
        iterator = iter(loader)
        for _ in zip(range(consumed_batches), iterator):
            pass
        return iterator

    def note(self, consumed_batches: int) -> None:
        """Record the loop's position in the sampler, so its own state_dict() tells the truth."""
        if self.sampler is not None:
            assert self.batch_size is not None
            self.sampler._note_consumed(consumed_batches * self.batch_size)
