"""Every rank agrees, at the same step, on whether to stop and on which rules fire by time.

Ranks see signals at different moments (or only one rank sees it) and only rank 0's clock
decides time-based saves; if each rank acted on its own view, one would enter the checkpoint's
collectives while another ran the next step's all-reduce: a deadlock. So at every step boundary
each rank contributes its flags to an element-wise MAX all-reduce and all act on the result.

The reduce is started without blocking and only waited for at the next boundary, so its latency
hides behind a training step; the price is that a stop takes effect one step after the signal
was seen. With one process there is no collective at all and no delay. The flags travel over
resilient's own gloo group on the CPU (even with NCCL, so reading them never synchronises the GPU),
which `shutdown` destroys after `close`: that joins the threads that reduced them, so none is left
to free a buffer while the interpreter exits (see `_dist._OwnGroup`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from ._dist import DistInfo, all_reduce_max_async


class StepAgreement:
    """`exchange(flags)` returns flags OR-ed over all ranks (one exchange late with several ranks)."""

    def __init__(self, info: DistInfo, width: int) -> None:
        self._info = info
        self._width = width
        self._in_flight: tuple[torch.Tensor, dist.Work] | None = None

    def exchange(self, flags: Sequence[int]) -> list[int]:
        """Contribute this boundary's flags; get the agreed flags every rank acts on now."""
        if self._info.world_size == 1:
            return list(flags)
        agreed = self.drain()
        buffer = torch.tensor(flags, dtype=torch.uint8)
        self._in_flight = (buffer, all_reduce_max_async(buffer, self._info))
        return agreed

    def drain(self) -> list[int]:
        """Wait for the reduce in flight (before a checkpoint's own collectives, or at the end)."""
        if self._in_flight is None:
            return [0] * self._width
        buffer, work = self._in_flight
        self._in_flight = None
        work.wait()
        return buffer.tolist()

    def close(self) -> None:
        """Drain before the group closes: every rank contributed to the last reduce, so it completes."""
        self.drain()
