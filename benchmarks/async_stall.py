"""How long does a periodic checkpoint stall training, saved asynchronously against synchronously?

A model and its AdamW of the given size train with steps of about ``--step-ms`` of matrix
products (compute standing in for forward and backward; the state itself is left unchanged, so
what is measured is the saves' cost), saving every ``--every`` steps. Side by side in one run,
alternating, best of ``--repeats``:

- `resilient.Run` with ``ModelCheckpoint(every_n_train_steps=every)`` and ``async_save=True``;
- the same with ``async_save=False``;
- the same loop without any checkpoint rule (the baseline);
- anchors: the plain loop calling ``torch.distributed.checkpoint.async_save`` (waiting for the
  previous save's future before the next, and for the last at the end) and ``.save``, in one
  process without a process group.

The stall per save is (wall time with saves - wall time without) / saves: for an asynchronous
save, the time its call takes to return plus what the steps after it lose until it completes.
Target (issue 9): resilient's async stall <= 0.10x its sync stall. Where this resilient's `Run`
has no ``async_save`` keyword yet, its async rows say "n/a (this resilient has no async_save)".

    python benchmarks/async_stall.py --dir /scratch/$USER --size-mib 1024 --json stall.json
    python benchmarks/async_stall.py --size-mib 2 --quick          # seconds: does it work?

`async_stall_rows()` returns the rows as data (`benchmarks/all.py` runs it with the others).
"""

from __future__ import annotations

import argparse
import json
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

NO_ASYNC = "n/a (this resilient has no async_save)"
TARGET_RATIO = 0.10


def _step_of(step_ms: float) -> Callable[[], None]:
    """A step of about `step_ms` of matrix products, calibrated on this machine now."""
    a = torch.randn(256, 256)

    def products(n: int) -> None:
        for _ in range(n):
            torch.mm(a, a)

    start = time.perf_counter()
    products(20)
    repeat = max(1, round(step_ms / 1e3 / ((time.perf_counter() - start) / 20)))
    return lambda: products(repeat)


def has_async_save() -> bool:
    """Whether this resilient's `Run` takes `async_save=` (a TypeError says it does not)."""
    with tempfile.TemporaryDirectory() as run_dir:
        try:
            resilient.Run(checkpoint=[], run_dir=run_dir, resume=False, async_save=True)
        except TypeError as error:
            if "async_save" not in str(error):
                raise
            return False
    return True


def _resilient_loop(work: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: Callable[[], None],
                    steps: int, every: int | None, async_save: bool | None) -> None:
    """Train `steps` steps through `resilient.Run`, saving every `every` steps (None: no rule at
    all); `async_save` None leaves the keyword out (a `Run` without it saves synchronously)."""
    rules = [] if every is None else [ModelCheckpoint(dirpath=work / "checkpoints", every_n_train_steps=every)]
    keywords = {} if async_save is None else {"async_save": async_save}
    with resilient.Run(checkpoint=rules, run_dir=work / "run", resume=False, **keywords) as run:
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


def async_stall_rows(size_bytes: int, directory: str | os.PathLike[str], *, step_ms: float = 100.0, every: int = 10,
                     saves: int = 5, repeats: int = 3) -> list[Row]:
    """The training stall per periodic save of a model + AdamW of `size_bytes`, saved every `every`
    steps of about `step_ms`, `saves` times per run, best of `repeats` alternating runs: resilient's
    async save against its sync one (target <= 0.10x), and each against DCP's."""
    model, optimizer = model_and_optimizer(size_bytes)
    state = state_dict(model, optimizer)
    size_mib = sum(t.nbytes for t in state_tensors(model, optimizer)) / 2**20
    step = _step_of(step_ms)
    steps = saves * every + every - 1  # the last save has `every - 1` steps to complete before the end
    asynchronous = has_async_save()
    works: dict[str, Callable[[Path], None]] = {
        "none": lambda work: _resilient_loop(work, model, optimizer, step, steps, None, None),
        "sync": lambda work: _resilient_loop(work, model, optimizer, step, steps, every,
                                             False if asynchronous else None),
        "dcp sync": lambda work: _dcp_loop(work, state, step, steps, every, asynchronous=False),
        "dcp async": lambda work: _dcp_loop(work, state, step, steps, every, asynchronous=True),
    }
    if asynchronous:
        works["async"] = lambda work: _resilient_loop(work, model, optimizer, step, steps, every, True)
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
    what, unit = f"training stall per save ({step_ms:g} ms steps, every {every})", "s/save"

    def async_row(anchor: str, anchor_value: float, **target: float) -> Row:
        return row(what + ", async_save=True", size_mib, stall.get("async"), anchor, anchor_value, unit,
                   ratio_of="resilient/anchor", note=None if asynchronous else NO_ASYNC, **target)

    return [async_row("resilient, async_save=False", stall["sync"], at_most=TARGET_RATIO),
            async_row("DCP async_save (torch.distributed.checkpoint)", stall["dcp async"]),
            row(what + ", async_save=False", size_mib, stall["sync"], "DCP save (torch.distributed.checkpoint)",
                stall["dcp sync"], unit, ratio_of="resilient/anchor")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".", help="directory on the filesystem checkpoints go to")
    parser.add_argument("--size-mib", type=int, default=256, help="model + AdamW state size (default 256)")
    parser.add_argument("--step-ms", type=float, default=100.0, help="compute per step (default 100 ms)")
    parser.add_argument("--every", type=int, default=10, help="steps between saves (default 10)")
    parser.add_argument("--saves", type=int, default=5, help="saves per run (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs, best one counts (default 3)")
    parser.add_argument("--quick", action="store_true", help="10 ms steps, 2 saves 3 steps apart, 1 run of each")
    parser.add_argument("--json", metavar="PATH", help="also write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.step_ms, args.every, args.saves, args.repeats = 10.0, 3, 2, 1
    measured = async_stall_rows(args.size_mib * 2**20, args.dir, step_ms=args.step_ms, every=args.every,
                                saves=args.saves, repeats=args.repeats)
    print(f"best of {args.repeats} alternating runs, directory {os.path.abspath(args.dir)}\n")
    print("| what | resilient s/save | anchor | anchor s/save | ratio | target |\n|---|---:|---|---:|---:|---|")
    for each in measured:
        ours = NO_ASYNC if each["resilient"] is None else f"{each['resilient']:.4f}"
        ratio = "-" if each["ratio"] is None else f"{each['ratio']:.2f}x"
        print(f"| {each['what']} | {ours} | {each['anchor']} | {each['anchor_value']:.4f} | {ratio} | "
              f"{each['target'] or '-'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=2) + "\n")


if __name__ == "__main__":
    main()
