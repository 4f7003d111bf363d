"""Capture and restore every random generator a training step may draw from.

Bitwise-identical resume needs the dropout masks, augmentations and shuffles after a restart to
be the ones the uninterrupted run would have drawn, so each process saves its own torch CPU,
CUDA, numpy (global legacy) and Python `random` states. The captured dict holds only tensors and
plain Python values so that it loads with `torch.load(weights_only=True)`, the safe default.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

try:
    import numpy as np
except ImportError:  # numpy is optional: without it there is no numpy generator to save
    np = None

_KEYS = frozenset({"torch", "cuda", "numpy", "python"})
T = TypeVar("T")


def capture_rng() -> dict[str, Any]:
    """This process's generator states; CUDA and numpy entries only where they exist."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if np is not None:
        name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        state["numpy"] = {
            "bit_generator": name,
            # uint32 keys held in int64: lossless, and every torch version can save int64.
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generators captured by `capture_rng`, tolerating a different machine.

    A checkpoint from a CPU-only run has no CUDA entry: CUDA generators are left alone. One from a
    process that saw a different number of GPUs restores the devices both have and warns, because
    draws on the other devices will not repeat the interrupted run.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from capture_rng(), got {type(state).__name__}")
    unknown = sorted(set(state) - _KEYS)
    if unknown:
        raise ValueError(
            f"state has unknown keys {unknown}; expected a dict from capture_rng() with keys among {sorted(_KEYS)}"
        )
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss_next = state["python"]
        # Serializers that turn tuples into lists would make random.setstate refuse the state.
        random.setstate((version, tuple(internal), gauss_next))
    if "numpy" in state and np is not None:  # without numpy here, nothing can draw from it
        saved = state["numpy"]
        np.random.set_state(
            (
                saved["bit_generator"],
                saved["keys"].numpy().astype(np.uint32),
                saved["pos"],
                saved["has_gauss"],
                saved["cached_gaussian"],
            )
        )
    if "cuda" in state:
        _restore_cuda(list(state["cuda"]))


def _restore_cuda(saved: list[torch.Tensor]) -> None:
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(saved) != here:
        warnings.warn(
            f"the checkpoint holds CUDA RNG states for {len(saved)} device(s) but this process sees "
            f"{here}; restoring the first {min(len(saved), here)}, so random draws on the others will "
            "differ from the interrupted run",
            stacklevel=3,
        )
    if here and saved:
        torch.cuda.set_rng_state_all(saved[:here])


@dataclass(frozen=True)
class PendingRng:
    """This rank's RNG states at the checkpoint, put back where the resumed loop reaches that point.

    `epoch_rng` (None at an epoch's start) recreates the epoch's data iterator first (worker
    seeds, sampler orders); `rng` then continues the draws from the checkpoint on.
    """

    rng: dict[str, Any]
    epoch_rng: dict[str, Any] | None


def make_epoch_iterator(make: Callable[[], Iterator[T]], pending: PendingRng | None, *,
                        persistent: bool = False) -> tuple[Iterator[T], dict[str, Any]]:
    """The epoch's data iterator, and the RNG it was made with (a checkpoint taken mid-epoch keeps it).

    Resuming mid-epoch, the iterator is recreated from the RNG it was first made with (worker
    seeds, RandomSampler orders), then the draws continue from the RNG state at the checkpoint.

    A DataLoader draws its workers' base seed from the main generator when it makes an iterator.
    With `persistent` workers it does so only for the process's first epoch and reuses the
    iterator afterwards, so a run resumed at a later epoch would draw once more than the run it
    continues. For such loaders making the iterator leaves the generators as they were, in every
    run alike: the workers' seeds then come from the state without consuming it.
    """
    if pending is not None and pending.epoch_rng is not None:
        restore_rng(pending.epoch_rng)
    epoch_rng = capture_rng()
    iterator = make()
    if pending is not None:
        restore_rng(pending.rng)
    elif persistent:
        restore_rng(epoch_rng)
    return iterator, epoch_rng


def seeded_rng(seed: int) -> dict[str, Any]:
    """Generator states as `capture_rng` records them, every generator seeded from `seed`; this
    process's own generators are left as they were."""
    before = capture_rng()
    try:
        torch.manual_seed(seed)
        random.seed(seed)
        if np is not None:
            np.random.seed(seed % 2**32)
        return capture_rng()
    finally:
        restore_rng(before)
