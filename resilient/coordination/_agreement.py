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
to free a buffer while the interpreter exits (see `_dist._OwnGroup`). Every step reduces into the
same buffer (at most one reduce is in flight, and it is read before the next starts), and "no flag
set", the answer at almost every step, travels as None: the common path builds no list or tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from ._dist import DistInfo, all_reduce_max_async


class StepAgreement:
    """`exchange(flags)` returns flags OR-ed over all ranks (one exchange late with several ranks).

    None stands for "no flag set", both ways, so that a quiet step allocates nothing.
    """

    def __init__(self, info: DistInfo, width: int) -> None:
        self._info = info
        self._zeros = bytes(width)
        self._flags = bytearray(width)  # the reduce's buffer, shared with the tensor below
        self._buffer = torch.frombuffer(self._flags, dtype=torch.uint8)
        self._in_flight: dist.Work | None = None

    def exchange(self, flags: Sequence[int] | None) -> Sequence[int] | None:
        """Contribute this boundary's flags (None: none set); get the agreed flags every rank acts on now."""
        if self._info.world_size == 1:
            return flags
        agreed = self.drain()
        self._flags[:] = self._zeros if flags is None else bytes(flags)
        self._in_flight = all_reduce_max_async(self._buffer, self._info)
        return agreed

    def drain(self) -> list[int] | None:
        """Wait for the reduce in flight (before a checkpoint's own collectives, or at the end)."""
        if self._in_flight is None:
            return None
        work, self._in_flight = self._in_flight, None
        work.wait()
        return None if self._flags == self._zeros else list(self._flags)

    def close(self) -> None:
        """Drain before the group closes: every rank contributed to the last reduce, so it completes."""
        self.drain()
