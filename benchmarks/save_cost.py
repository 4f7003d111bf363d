"""What does a safe checkpoint cost next to the plain `torch.save` people hand-write?

Side by side, on the same state and directory, best of several runs:

- ``torch.save``: what a hand-written submitit ``checkpoint()`` or Lightning does (no fsync:
  a crash or node failure shortly after can leave a truncated file).
- ``torch.save + fsync``: the same made durable.
- resilient: temporary directory, xxh3 checksums while writing, fsync of every file and of the
  directories, manifest, atomic rename: verifiable and never half-visible.

The ratio resilient / (torch.save + fsync) is the price of atomicity and checksums.

    python benchmarks/save_cost.py --dir /scratch/$USER --size-mib 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
from _timing import best_seconds

from resilient.checkpoint import write_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".", help="directory on the filesystem checkpoints go to")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tensors = max(1, args.size_mib // 16)
    state = {f"layer{i}.weight": torch.randn(4 * 1024 * 1024) for i in range(tensors)}  # 16 MiB each
    work = Path(tempfile.mkdtemp(prefix="save-cost-", dir=args.dir))
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

        rows = [("torch.save", best_seconds(torch_save, args.repeats)),
                ("torch.save + fsync", best_seconds(torch_save_fsync, args.repeats)),
                ("resilient (atomic, checksummed, fsynced)", best_seconds(resilient_save, args.repeats))]
    finally:
        shutil.rmtree(work)

    size_gb = tensors * 16 * 2**20 / 1e9
    print(f"state: {tensors * 16} MiB in {tensors} tensors, directory: {os.path.abspath(args.dir)}\n")
    print("| save | seconds | GB/s |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {size_gb / seconds:.2f} |")
    print(f"\nresilient / (torch.save + fsync): {rows[2][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
