"""How long does a periodic checkpoint stall training, saved asynchronously against synchronously?

A model and its AdamW of the given size train with steps of about ``--step-ms`` (the state itself
is left unchanged, so what is measured is the saves' cost), saving every ``--every`` steps; by
default often, but not more often than every 2.5 synchronous saves' time (the slowest of three
in a row, measured first): an asynchronous save only hides behind training if it is done before
the next one is due (a save due while one is in flight waits for it, as `Run` documents). Two
kinds of step:

- ``device``: the step's compute runs elsewhere and the CPU waits for it, as a GPU step does
  (stood in for by sleeping: the CPU idle, the GIL free). This is the case async saves are for,
  and the one the target is set on.
- ``cpu``: matrix products on every core. A background write then competes with the step for
  the CPUs, so some of its cost comes back as slower steps.

Side by side in one run, alternating, best of ``--repeats``:

- `resilient.Run` with ``ModelCheckpoint(every_n_train_steps=every)`` and ``async_save=True``;
- the same with ``async_save=False``;
- the same loop without any checkpoint rule (the baseline);
- anchors: the plain loop calling ``torch.distributed.checkpoint.async_save`` (waiting for the
  previous save's future before the next, and for the last at the end) and ``.save``, in one
  process without a process group.

The stall per save is (wall time with saves - wall time without) / saves: for an asynchronous
save, the time its call takes to return plus what the steps after it lose until it completes.
Target (issue 9): resilient's async stall <= 0.10x its sync stall, with device-like steps.

    python benchmarks/async_stall.py --dir /scratch/$USER --size-mib 1024 --json stall.json
    python benchmarks/async_stall.py --size-mib 2 --quick          # seconds: does it work?

`async_stall_rows()` returns the rows as data (`benchmarks/all.py` runs it with the others).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from _timing import Row, alternating_best, row
from checkpoint_io import dcp_save, model_and_optimizer, state_dict, state_tensors

import resilient
from resilient import ModelCheckpoint
from resilient.checkpoint import write_checkpoint

TARGET_RATIO = 0.10
STEP_KINDS = ("device", "cpu")


def _step_of(kind: str, step_ms: float) -> Callable[[], None]:
    """A step of about `step_ms`: the CPU waiting for a device (`device`), or matrix products
    calibrated on this machine now (`cpu`)."""
    if kind == "device":
        return lambda: time.sleep(step_ms / 1e3)
    a = torch.randn(256, 256)

    def products(n: int) -> None:
        for _ in range(n):
            torch.mm(a, a)

    start = time.perf_counter()
    products(20)
    repeat = max(1, round(step_ms / 1e3 / ((time.perf_counter() - start) / 20)))
    return lambda: products(repeat)


def _resilient_loop(work: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: Callable[[], None],
                    steps: int, every: int | None, async_save: bool) -> None:
    """Train `steps` steps through `resilient.Run`, saving every `every` steps (None: no rule at all)."""
    rules = [] if every is None else [ModelCheckpoint(dirpath=work / "checkpoints", every_n_train_steps=every)]
    with resilient.Run(checkpoint=rules, run_dir=work / "run", resume=False, async_save=async_save) as run:
        run.track(model=model, optimizer=optimizer)
        for _ in run.epochs(1):
            for _ in run.batches(range(steps)):
                step()


def _dcp_loop(work: Path, state: dict[str, object], step: Callable[[], None], steps: int, every: int,
              asynchronous: bool) -> None:
    """The anchor: the plain loop saving with PyTorch's distributed checkpoint every `every` steps."""
    pending: Future[object] | None = None
    for done in range(1, steps + 1):
        step()
        if done % every:
            continue
        path = work / f"step={done}"
        if not asynchronous:
            dcp_save(state, path)
            continue
        if pending is not None:
            pending.result()  # one save at a time, as DCP requires
        pending = dcp.async_save(state, checkpoint_id=path, no_dist=True)  # type: ignore[assignment]
    if pending is not None:
        pending.result()


def _save_seconds(state: dict[str, object], directory: str | os.PathLike[str], saves: int = 3) -> float:
    """How long a synchronous save of `state` takes here when saves follow each other (resilient's
    write, fsyncs included): the slowest of `saves` in a row. One save alone is not enough: a disk
    absorbs a first burst faster than it sustains (here a 1 GiB save took 0.28 s alone and 1.2 s
    in the loop), and a rule calibrated on the burst would fire while the last write is still on
    its way, measuring the wait for it instead of the stall of a save."""
    with tempfile.TemporaryDirectory(dir=directory) as work:
        write_checkpoint([(Path(work) / "probe.ckpt", "manual")], {"state.pt": state}, step=0, epoch=0,
                         metrics={}, world_size=1)  # the page cache and allocator warmed up
        slowest = 0.0
        for index in range(saves):
            started = time.perf_counter()
            write_checkpoint([(Path(work) / f"timed-{index}.ckpt", "manual")], {"state.pt": state}, step=0,
                             epoch=0, metrics={}, world_size=1)
            slowest = max(slowest, time.perf_counter() - started)
        return slowest


def async_stall_rows(size_bytes: int, directory: str | os.PathLike[str], *, step_ms: float = 100.0,
                     every: int | None = None, saves: int = 5, repeats: int = 3,
                     kinds: tuple[str, ...] = STEP_KINDS) -> list[Row]:
    """The training stall per periodic save of a model + AdamW of `size_bytes`, saved every `every`
    steps of about `step_ms`, `saves` times per run, best of `repeats` alternating runs, for each
    kind of step: resilient's async save against its sync one (target <= 0.10x, device-like
    steps), and each against DCP's."""
    model, optimizer = model_and_optimizer(size_bytes)
    state = state_dict(model, optimizer)
    size_mib = sum(t.nbytes for t in state_tensors(model, optimizer)) / 2**20
    if every is None:
        every = max(10, math.ceil(2.5 * _save_seconds(state, directory) / (step_ms / 1e3)))
    rows = []
    for kind in kinds:
        rows += _stall_rows(kind, model, optimizer, state, size_mib, directory, step_ms, every, saves, repeats)
    return rows


def _stall_rows(kind: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, object],
                size_mib: float, directory: str | os.PathLike[str], step_ms: float, every: int, saves: int,
                repeats: int) -> list[Row]:
    step = _step_of(kind, step_ms)
    steps = saves * every + every - 1  # the last save has `every - 1` steps to complete before the end
    works: dict[str, Callable[[Path], None]] = {
        "none": lambda work: _resilient_loop(work, model, optimizer, step, steps, None, False),
        "sync": lambda work: _resilient_loop(work, model, optimizer, step, steps, every, False),
        "async": lambda work: _resilient_loop(work, model, optimizer, step, steps, every, True),
        "dcp sync": lambda work: _dcp_loop(work, state, step, steps, every, asynchronous=False),
        "dcp async": lambda work: _dcp_loop(work, state, step, steps, every, asynchronous=True),
    }
    root = Path(tempfile.mkdtemp(prefix="async-stall-", dir=directory))
    current = root / "current"

    def fresh() -> None:  # each run starts from an empty directory, emptied out of the timing
        shutil.rmtree(current, ignore_errors=True)
        current.mkdir()

    try:
        seconds = dict(zip(works, alternating_best([lambda w=w: w(current) for w in works.values()], repeats,
                                                   before=fresh)))
    finally:
        shutil.rmtree(root)
    stall = {name: (seconds[name] - seconds["none"]) / saves for name in works if name != "none"}
    what, unit = f"training stall per save ({step_ms:g} ms {kind} steps, every {every})", "s/save"
    target = {"at_most": TARGET_RATIO} if kind == "device" else {}
    return [row(what + ", async_save=True", size_mib, stall["async"], "resilient, async_save=False", stall["sync"],
                unit, ratio_of="resilient/anchor", **target),
            row(what + ", async_save=True", size_mib, stall["async"], "DCP async_save (torch.distributed.checkpoint)",
                stall["dcp async"], unit, ratio_of="resilient/anchor"),
            row(what + ", async_save=False", size_mib, stall["sync"], "DCP save (torch.distributed.checkpoint)",
                stall["dcp sync"], unit, ratio_of="resilient/anchor")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".", help="directory on the filesystem checkpoints go to")
    parser.add_argument("--size-mib", type=int, default=256, help="model + AdamW state size (default 256)")
    parser.add_argument("--step-ms", type=float, default=100.0, help="compute per step (default 100 ms)")
    parser.add_argument("--every", type=int, default=None,
                        help="steps between saves (default: at least 10, and 2.5 sync saves' time)")
    parser.add_argument("--saves", type=int, default=5, help="saves per run (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs, best one counts (default 3)")
    parser.add_argument("--step", choices=STEP_KINDS, action="append",
                        help="kind of step, device or cpu (default: both)")
    parser.add_argument("--quick", action="store_true", help="10 ms steps, 2 saves 3 steps apart, 1 run of each")
    parser.add_argument("--json", metavar="PATH", help="also write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.step_ms, args.every, args.saves, args.repeats = 10.0, 3, 2, 1
    measured = async_stall_rows(args.size_mib * 2**20, args.dir, step_ms=args.step_ms, every=args.every,
                                saves=args.saves, repeats=args.repeats, kinds=tuple(args.step or STEP_KINDS))
    print(f"best of {args.repeats} alternating runs, directory {os.path.abspath(args.dir)}\n")
    print("| what | resilient s/save | anchor | anchor s/save | ratio | target |\n|---|---:|---|---:|---:|---|")
    for each in measured:
        print(f"| {each['what']} | {each['resilient']:.4f} | {each['anchor']} | {each['anchor_value']:.4f} | "
              f"{each['ratio']:.2f}x | "
              f"{each['target'] or '-'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=2) + "\n")


if __name__ == "__main__":
    main()
