"""What a DataLoader's worker processes need so that a run can stop, die and resume exactly.

Workers are forked copies of a rank's main process. What they inherit, and what they do on their
own, would break three promises unless each is handled:

- **Stopping.** SLURM signals every process of a job, and a terminal's Ctrl-C reaches the whole
  process group; a worker that dies of it takes the training step down before the emergency
  checkpoint. Workers ignore the stop signals: the main process decides.
- **Dying.** A worker busy in `__getitem__` when its main process is SIGKILLed goes on for as
  long as the item takes (the DataLoader's own watchdog only looks between items), holding
  whatever it inherited. The kernel kills it with its parent (Linux's PR_SET_PDEATHSIG). The run
  lock is closed in every forked child besides (`rundir/_lock.py`), so a worker can never hold it.
- **Random augmentation.** Each worker draws from its own generators, seeded once per epoch and
  then advanced by every item it loads. A resumed epoch hands its remaining batches to workers
  in a different round-robin order, so the same sample would meet a different point of a
  different stream. We do not try to carry workers' streams across a restart; we take them out
  of the picture: with a `ResumableSampler`, every index the workers receive carries a seed
  derived from (sampler seed, epoch, sample index), and the worker seeds torch, numpy and
  `random` from it just before loading that sample (or batch, for datasets with
  `__getitems__`). Sample *i* of epoch *e* is then augmented the same way whatever the number
  of workers, prefetching, `persistent_workers`, world size or interruptions. The main process's
  generators (dropout, the sampler's shuffles) are untouched: they are restored from the
  checkpoint as before.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import random
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

try:
    import numpy as np
except ImportError:  # numpy is optional: without it there is no numpy generator to seed
    np = None

_MASK64 = (1 << 64) - 1
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _mix64(value: int) -> int:
    """SplitMix64's finaliser: spreads every input bit over the 64-bit output."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed every sample seed of one epoch derives from."""
    return _mix64(_mix64(seed & _MASK64) ^ epoch)


class SampleIndex(int):
    """A dataset index that carries the seed its sample is to be loaded with.

    It is an `int`, so samplers, batch samplers and pickling treat it as one; the worker turns
    it back into a plain `int` before the dataset sees it.
    """

    seed: int

    def __new__(cls, index: int, seed: int) -> SampleIndex:
        self = super().__new__(cls, index)
        self.seed = seed
        return self

    def __reduce__(self) -> tuple[type[SampleIndex], tuple[int, int]]:
        return SampleIndex, (int(self), self.seed)

    @classmethod
    def of(cls, index: int, base: int) -> SampleIndex:
        return cls(index, _mix64(base ^ index))


def _seed_generators(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    if np is not None:
        np.random.seed([seed & 0xFFFFFFFF, seed >> 32])


def _seeding_class(cls: type, with_dict: bool) -> type:
    """A subclass of `cls` whose loading seeds the generators from a `SampleIndex` first.

    Built per class, with methods that call `cls`'s own: a mixin base would change the
    instance layout, and Python then refuses the `__class__` assignment. Datasets that load a
    whole batch at once (`__getitems__`) get one seed per batch, their first sample's.
    """
    get_item = cls.__getitem__

    def __getitem__(self: Any, index: Any) -> Any:
        if isinstance(index, SampleIndex):
            _seed_generators(index.seed)
            index = int(index)
        return get_item(self, index)

    namespace: dict[str, Any] = {"__getitem__": __getitem__, "__module__": cls.__module__, "_seeds_samples": True}
    get_items = getattr(cls, "__getitems__", None)
    if get_items:
        def __getitems__(self: Any, indices: Sequence[Any]) -> Any:
            if indices and isinstance(indices[0], SampleIndex):
                _seed_generators(indices[0].seed)
                indices = [int(index) for index in indices]
            return get_items(self, indices)

        namespace["__getitems__"] = __getitems__
    if not with_dict:
        namespace["__slots__"] = ()  # a class with __slots__ only must get no new slot
    return type(cls.__name__, (cls,), namespace)


_seeding_classes: dict[type, type] = {}


def _seed_per_sample(dataset: object) -> None:
    """Give this worker's copy of the dataset per-sample seeding (the user's object is untouched)."""
    cls = type(dataset)
    if getattr(cls, "_seeds_samples", False):
        return
    if cls not in _seeding_classes:
        _seeding_classes[cls] = _seeding_class(cls, with_dict=hasattr(dataset, "__dict__"))
    try:
        dataset.__class__ = _seeding_classes[cls]
    except TypeError as error:  # a C type, or a layout Python cannot extend
        warnings.warn(
            f"{cls.__name__} cannot be given per-sample seeds ({error}); random augmentation in "
            "DataLoader workers will not repeat exactly after a resume",
            stacklevel=2,
        )


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


class _WorkerSetup:
    """The worker_init_fn Run installs (picklable, for spawned workers); the user's runs after it."""

    def __init__(self, signals: tuple[int, ...], then: Callable[[int], None] | None) -> None:
        self._signals = signals
        self._parent = os.getpid()
        self._then = then

    def __call__(self, worker_id: int) -> None:
        for signum in self._signals:
            signal.signal(signum, signal.SIG_IGN)
        _die_with_parent(self._parent)
        info = torch.utils.data.get_worker_info()
        if info is not None:
            _seed_per_sample(info.dataset)
        if self._then is not None:
            self._then(worker_id)


def prepare_workers(loader: object, signals: tuple[int, ...]) -> None:
    """Install `_WorkerSetup` on a DataLoader with workers (once; the user's init function is kept)."""
    if not getattr(loader, "num_workers", 0) or isinstance(getattr(loader, "worker_init_fn", None), _WorkerSetup):
        return
    _kill_workers_at_exit()
    user_init: Callable[[int], None] | None = getattr(loader, "worker_init_fn", None)
    loader.worker_init_fn = _WorkerSetup(signals, user_init)  # type: ignore[attr-defined]


def _kill_daemonic_children() -> None:
    """SIGKILL daemonic children, so that interpreter exit cannot hang on a DataLoader worker.

    At exit, multiprocessing terminates its daemonic children with SIGTERM and then joins them.
    A worker that ignores SIGTERM (our doing) and was never shut down (its iterator still
    referenced, e.g. by the traceback of the exception that ends the script) would make that
    join wait forever: a crashed job would hang instead of failing or requeueing. SIGKILL is what
    multiprocessing means to do anyway; a worker still starting up may not ignore SIGTERM yet,
    so checking which ones ignore it would race.
    """
    children = [child for child in multiprocessing.active_children() if child.daemon and child.pid is not None]
    if children and threading.current_thread() is threading.main_thread():
        # DataLoader's SIGCHLD handler would report each kill as a worker failure.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]


_exit_guard_registered = False


def _kill_workers_at_exit() -> None:
    # atexit runs handlers last-registered first: registered after multiprocessing's own (its
    # module is imported above), ours runs before its terminate-and-join.
    global _exit_guard_registered
    if not _exit_guard_registered:
        _exit_guard_registered = True
        atexit.register(_kill_daemonic_children)
