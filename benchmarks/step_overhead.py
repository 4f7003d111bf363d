"""What does `run.batches()` add to every training step?

Side by side in one run: the same small training loop iterated plainly and through
`run.batches()` (step counting, rule checks, signal flags and, with several ranks, the
non-blocking agreement). Run it plainly for one process, or under torchrun for several:

    python benchmarks/step_overhead.py --steps 2000
    torchrun --nproc-per-node 2 benchmarks/step_overhead.py --steps 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

import resilient


def _loop(batches: object, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    for x in batches:  # type: ignore[attr-defined]
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = [torch.randn(32, 64) for _ in range(args.steps)]

    with tempfile.TemporaryDirectory() as run_dir, resilient.Run(checkpoint=[], run_dir=run_dir) as run:
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
        if run.world_size > 1:
            model = nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        _loop(data[:100], model, optimizer)  # warm up
        timings = {"plain loop": float("inf"), "run.batches()": float("inf")}
        for _ in run.epochs(args.rounds):  # alternate the two, keep each one's best round
            for name in timings:
                start = time.perf_counter()
                _loop(data if name == "plain loop" else run.batches(data), model, optimizer)
                timings[name] = min(timings[name], (time.perf_counter() - start) / args.steps * 1e6)
        if run.rank == 0:
            print(f"{args.steps} steps, world size {run.world_size}\n")
            print("| loop | µs per step |\n|---|---:|")
            for name, micros in timings.items():
                print(f"| {name} | {micros:.1f} |")
            print(f"\nrun.batches() / plain: {timings['run.batches()'] / timings['plain loop']:.3f}x")


if __name__ == "__main__":
    main()
