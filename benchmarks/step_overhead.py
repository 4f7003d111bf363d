"""What does `run.batches()` add to every training step?

Side by side in one run, alternating, best of N rounds: the same loop iterated plainly (the
anchor) and through `run.batches()` with two checkpoint rules that are not due and a
`run.log("loss", tensor)` each step (step counting, rule checks, signal flags and, with several
ranks, the non-blocking agreement). The overhead per step is the difference of the two, in the
same run; the ratio is the loop's time over the anchor's.

- one process, over a list (the loop body does nothing: what is left is resilient's own cost);
- one process, over a DataLoader, with two step rules, then with a step rule and a time rule
  (which reads the clock every step);
- two ranks on gloo (processes this script starts), each step sleeping 10 ms and then reducing a
  small tensor, as DDP's gradient reduce would: what the per-step agreement adds to a 10 ms step.
  Sleeping, not computing, so that the two ranks do not fight each other and the machine's other
  users for the cores; the agreement's reduce runs meanwhile.

Many short rounds rather than a few long ones: on a shared machine the best of many is the one
least disturbed. Each round of `run.batches()` is one epoch, so its per-epoch cost is included.
One process is timed by the CPU time of its thread (the loops are single-threaded Python, and on a
shared machine wall time mostly measures the other users); two ranks by wall time, as they sleep
and wait for each other.

    python benchmarks/step_overhead.py                          # full size
    python benchmarks/step_overhead.py --quick --json out.json  # seconds: proves it works

`rows()` returns the same rows as data (`benchmarks/all.py` runs it with the other benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.distributed as dist
from _timing import Row, alternating_best, row
from torch.utils.data import DataLoader, TensorDataset

import resilient
from resilient import ModelCheckpoint

NEVER = 10**12  # a step interval no benchmark reaches: the rules are checked, never due
TARGET_OVERHEAD_US = 2.0
TARGET_RANKS_RATIO = 1.05
ANCHOR = "the same loop, plain"


def _row(loop: str, steps: int, anchor_us: float, loop_us: float, **target: object) -> Row:
    """`loop_us` through `run.batches()` against `anchor_us` plain, best µs per step of each."""
    return {**row(loop, None, loop_us, ANCHOR, anchor_us, "µs/step", ratio_of="resilient/anchor", **target),
            "steps": steps}


def _rules(timed: bool) -> list[ModelCheckpoint]:
    second = (ModelCheckpoint(monitor="loss", train_time_interval="1h", filename="timed-{step}") if timed else
              ModelCheckpoint(monitor="loss", every_n_train_steps=NEVER, filename="best-{step}"))
    return [ModelCheckpoint(every_n_train_steps=NEVER), second]


def _measure(run: resilient.Run, data: Iterable[object], steps: int, rounds: int,
             step: Callable[[], object] = lambda: None, clock: Callable[[], float] = time.thread_time,
             ) -> tuple[float, float]:
    """Best µs per step of the plain loop and of `run.batches()` (one epoch of the run each round)."""
    loss = torch.tensor(0.5)
    epochs = iter(run.epochs(sys.maxsize))

    def plain() -> None:
        for _ in data:
            step()

    def through_run() -> None:
        next(epochs)
        for _ in run.batches(data):
            step()
            run.log("loss", loss)

    plain_s, run_s = alternating_best([plain, through_run], rounds, clock=clock)
    return plain_s / steps * 1e6, run_s / steps * 1e6


def one_process(args: argparse.Namespace) -> list[Row]:
    listed = list(range(args.list_steps))
    loader = DataLoader(TensorDataset(torch.randn(args.loader_steps * 8, 16)), batch_size=8)
    rows = []
    for name, data, steps, timed in (("1 process, list, 2 step rules", listed, args.list_steps, False),
                                     ("1 process, DataLoader, 2 step rules", loader, args.loader_steps, False),
                                     ("1 process, DataLoader, step + time rule", loader, args.loader_steps, True)):
        with tempfile.TemporaryDirectory() as run_dir, resilient.Run(checkpoint=_rules(timed), run_dir=run_dir) as run:
            anchor_us, loop_us = _measure(run, data, steps, args.rounds)
            rows.append(_row(name, steps, anchor_us, loop_us, target=f"overhead <= {TARGET_OVERHEAD_US:g} µs",
                             met=loop_us - anchor_us <= TARGET_OVERHEAD_US))
    return rows


def rank_worker(args: argparse.Namespace) -> None:
    """One of the ranks this script starts: print its best times as one JSON line."""
    with resilient.Run(checkpoint=_rules(False), run_dir=args.rank_worker) as run:
        gradients = torch.zeros(1024)

        def step() -> None:
            time.sleep(args.step_ms / 1e3)
            dist.all_reduce(gradients)  # the step's own collective, as DDP's: it keeps the ranks in step

        plain, through = _measure(run, range(args.rank_steps), args.rank_steps, args.rank_rounds, step,
                                  time.perf_counter)
    print(json.dumps({"rank": run.rank, "plain_us": plain, "run_us": through}), flush=True)


def two_ranks(args: argparse.Namespace) -> Row:
    """Start two ranks on gloo; the row is the slower rank's (the one the job waits for)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, __file__, "--rank-worker", run_dir, "--rank-rounds", str(args.rank_rounds),
                   "--rank-steps", str(args.rank_steps), "--step-ms", str(args.step_ms)]
        env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        ranks = [subprocess.Popen(command, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                  stdout=subprocess.PIPE, text=True) for rank in range(2)]
        outputs = [rank.communicate()[0] for rank in ranks]
    if any(rank.returncode for rank in ranks):
        raise SystemExit(f"a rank failed (exit codes {[rank.returncode for rank in ranks]})")
    results = [json.loads(output.splitlines()[-1]) for output in outputs]
    slower = max(results, key=lambda result: result["run_us"] / result["plain_us"])
    return _row(f"2 ranks (gloo), {args.step_ms:g} ms step", args.rank_steps, slower["plain_us"], slower["run_us"],
                at_most=TARGET_RANKS_RATIO)


def rows(quick: bool = False) -> list[Row]:
    """The table's rows, at full size or (`quick`) on tiny sizes in 3 rounds."""
    return _rows(_arguments(["--quick"] if quick else []))


def _rows(args: argparse.Namespace) -> list[Row]:
    return [*one_process(args), two_ranks(args)]


def print_table(rows: list[Row], rounds: int, rank_rounds: int) -> None:
    print(f"run.batches() with 2 rules not due + run.log each step, against the same loop without it "
          f"(best of {rounds} alternating rounds; two ranks: {rank_rounds})\n")
    print("| loop | steps | anchor µs/step | overhead µs/step | ratio | target |\n|---|---:|---:|---:|---:|---|")
    for each in rows:
        print(f"| {each['what']} | {each['steps']} | {each['anchor_value']:.2f} | "
              f"{each['resilient'] - each['anchor_value']:.2f} | {each['ratio']:.3f}x | {each['target']} |")


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 3 rounds: seconds, not minutes")
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds of one process")
    parser.add_argument("--list-steps", type=int, default=20_000, help="steps per round")
    parser.add_argument("--loader-steps", type=int, default=1_000, help="steps per round")
    parser.add_argument("--rank-rounds", type=int, default=7, help="alternating rounds of two ranks")
    parser.add_argument("--rank-steps", type=int, default=100, help="steps per round")
    parser.add_argument("--step-ms", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--rank-worker", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.list_steps, args.loader_steps, args.rank_rounds, args.rank_steps = 3, 2000, 200, 3, 10
    return args


def main() -> None:
    args = _arguments()
    if args.rank_worker:
        rank_worker(args)
        return
    measured = _rows(args)
    print_table(measured, args.rounds, args.rank_rounds)
    if args.json:
        args.json.write_text(json.dumps(measured, indent=2) + "\n")


if __name__ == "__main__":
    main()
