"""Every rank agrees, at the same step, on whether to stop and on which rules fire by time.

Ranks see signals at different moments (or only one rank sees it) and only rank 0's clock
decides time-based saves; if each rank acted on its own view, one would enter the checkpoint's
collectives while another ran the next step's all-reduce: a deadlock. So at every step boundary
each rank contributes its flags to an element-wise MAX all-reduce and all act on the result.

The reduce is started without blocking and only waited for at the next boundary, so its latency
hides behind a training step; the price is that a stop takes effect one step after the signal
was seen. With one process there is no collective at all and no delay. With NCCL the flags
still travel over a small gloo group on the CPU, so reading them never synchronises the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from ._dist import DistInfo

# The buffers of a Run's last reduces, kept until the interpreter exits (a few bytes per Run).
_KEPT_UNTIL_EXIT: list[object] = []


class StepAgreement:
    """`exchange(flags)` returns flags OR-ed over all ranks (one exchange late with several ranks)."""

    def __init__(self, info: DistInfo, width: int) -> None:
        self._info = info
        self._width = width
        self._group = None
        if info.world_size > 1 and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")
        self._in_flight: tuple[torch.Tensor, dist.Work] | None = None
        # Buffers of finished reduces, released one exchange late; see `drain`.
        self._finished: tuple[torch.Tensor, dist.Work] | None = None

    def exchange(self, flags: Sequence[int]) -> list[int]:
        """Contribute this boundary's flags; get the agreed flags every rank acts on now."""
        if self._info.world_size == 1:
            return list(flags)
        agreed = self.drain()
        buffer = torch.tensor(flags, dtype=torch.uint8)
        work = dist.all_reduce(buffer, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        self._in_flight = (buffer, work)
        return agreed

    def drain(self) -> list[int]:
        """Wait for the reduce in flight (before a checkpoint's own collectives, or at the end)."""
        if self._in_flight is None:
            return [0] * self._width
        buffer, work = self._in_flight
        self._in_flight = None
        work.wait()
        # gloo's worker thread destroys its side of the work a moment after `wait()` returns. If
        # Python has let go of the buffer by then, that destruction must take the GIL to free
        # the tensor's Python object, and a worker thread taking the GIL while the interpreter
        # exits aborts the whole process ("terminate called without an active exception"). So
        # each buffer stays referenced one exchange longer, by which time its work is long gone.
        self._finished = (buffer, work)
        return buffer.tolist()

    def close(self) -> None:
        """Drain, then keep the last buffer alive until exit: no exchange follows to outlast its work."""
        self.drain()
        if self._finished is not None:
            _KEPT_UNTIL_EXIT.append(self._finished)
            self._finished = None
