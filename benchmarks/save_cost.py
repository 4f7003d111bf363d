"""What does a safe checkpoint cost next to the plain `torch.save` people hand-write?

Side by side, on the same state and directory, alternating, best of several rounds:

- ``torch.save``: what a hand-written submitit ``checkpoint()`` or Lightning does (no fsync:
  a crash or node failure shortly after can leave a truncated file).
- ``torch.save + fsync``: the same made durable.
- resilient: temporary directory, xxh3 checksums while writing, fsync of every file and of the
  directories, manifest, atomic rename: verifiable and never half-visible.

The ratio resilient / (torch.save + fsync) is the price of atomicity and checksums.

    python benchmarks/save_cost.py --dir /scratch/$USER --size-mib 256

`rows()` returns resilient's save against each anchor as data (`benchmarks/all.py` runs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
from _timing import Row, alternating_best, removing, row

from resilient.checkpoint import write_checkpoint

RESILIENT = "resilient (atomic, checksummed, fsynced)"


def _state_mib(size_mib: int) -> int:
    return max(1, size_mib // 16) * 16


def _best(size_mib: int, directory: str | os.PathLike[str], repeats: int) -> dict[str, float]:
    """Best seconds of each way of saving a state of 16 MiB tensors, taking turns."""
    state = {f"layer{i}.weight": torch.randn(4 * 1024 * 1024) for i in range(_state_mib(size_mib) // 16)}
    work = Path(tempfile.mkdtemp(prefix="save-cost-", dir=directory))
    try:
        plain = work / "plain.pt"

        def torch_save() -> None:
            torch.save(state, plain)

        def torch_save_fsync() -> None:
            with open(plain, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())

        def resilient_save() -> None:
            write_checkpoint([(work / "safe.ckpt", "bench")], {"state.pt": state}, step=0, epoch=0,
                             metrics={}, world_size=1)

        works = {"torch.save": torch_save, "torch.save + fsync": torch_save_fsync, RESILIENT: resilient_save}
        return dict(zip(works, alternating_best(list(works.values()), repeats,
                                                before=removing(plain, work / "safe.ckpt"))))
    finally:
        shutil.rmtree(work)


def rows(size_mib: int, directory: str | os.PathLike[str], repeats: int = 3) -> list[Row]:
    """Resilient's save of a state of flat 16 MiB tensors against each anchor's (ratio: anchor / resilient)."""
    best = _best(size_mib, directory, repeats)
    return [row("save, flat 16 MiB tensors", _state_mib(size_mib), best[RESILIENT], anchor, best[anchor], "s",
                ratio_of="anchor/resilient") for anchor in ("torch.save", "torch.save + fsync")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".", help="directory on the filesystem checkpoints go to")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    best = _best(args.size_mib, args.dir, args.repeats)
    state_mib = _state_mib(args.size_mib)
    print(f"state: {state_mib} MiB in {state_mib // 16} tensors, directory: {os.path.abspath(args.dir)}\n")
    print("| save | seconds | GB/s |\n|---|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} | {state_mib * 2**20 / 1e9 / seconds:.2f} |")
    print(f"\nresilient / (torch.save + fsync): {best[RESILIENT] / best['torch.save + fsync']:.2f}x")


if __name__ == "__main__":
    main()
