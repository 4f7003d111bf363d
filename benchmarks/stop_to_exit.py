"""How long from the stop signal to the process's end, with a state of parameters plus AdamW?

Side by side on the same state and directory, alternating, best of several rounds:

- the anchor, a hand-written handler in a plain process: SIGTERM sets a flag; at the next step
  the loop `torch.save`s model and optimizer to one file, fsyncs it and calls `sys.exit`.
- resilient, a submitted job (local executor) stopped as `resilient cancel` stops it: the
  emergency checkpoint at the next step boundary (atomic, checksummed, fsynced), the end
  recorded, then the task leaves without the interpreter's teardown.
- resilient in a plain process (`with Run(...)` in the user's own script): the same checkpoint,
  then a SystemExit the script may catch, and the interpreter's teardown with torch loaded.

Time runs from the signal to the process's end (a pidfd says when), each step being one forward
pass of the model. The issue's target is resilient <= 1.05x the anchor.

    python benchmarks/stop_to_exit.py --dir /scratch/$USER --size-mib 1024 --json stop.json

`rows()` returns the same rows as data (`benchmarks/all.py` runs it with the other benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from _timing import Row, row

if TYPE_CHECKING:  # imported for real only in the processes that train, not in the one that measures
    import torch

    import resilient

REPO = Path(__file__).resolve().parents[1]
ANCHOR = "hand-written handler: torch.save + fsync + exit"
TASK = "resilient, a submitted task (fast exit)"
PLAIN = "resilient, the user's own process (teardown)"
LAYER_MIB = 12  # a 1024x1024 float32 Linear: 4 MiB of weights, 8 MiB of AdamW moments
TARGET_RATIO = 1.05


def _state(size_mib: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model and an AdamW with its moments, `size_mib` in all."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(1024, 1024, bias=False) for _ in range(max(1, size_mib // LAYER_MIB))))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 1024)).sum().backward()
    optimizer.step()
    return model, optimizer


def _step(model: torch.nn.Module) -> None:
    import torch

    with torch.no_grad():
        model(torch.ones(1, 1024))


def _anchor(size_mib: int, directory: Path, ready: Path) -> None:
    import torch

    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    model, optimizer = _state(size_mib)
    ready.write_text(str(os.getpid()))
    while not stop:
        _step(model)
    with open(directory / "handwritten.pt", "wb") as file:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, file)
        file.flush()
        os.fsync(file.fileno())
    sys.exit(0)


def _train(run: resilient.Run, size_mib: int, ready: str) -> None:
    model, optimizer = _state(size_mib)
    run.track(model=model, optimizer=optimizer)
    for _ in run.epochs(1):
        for _ in run.batches(range(10**9)):
            if run.step == 1:
                Path(ready).write_text(str(os.getpid()))
            _step(model)


def _plain(size_mib: int, directory: Path, ready: Path) -> None:
    import resilient

    with resilient.Run(run_dir=directory / "plain-run") as run:
        _train(run, size_mib, str(ready))


def _until_ready(ready: Path, process: subprocess.Popen[bytes] | None = None) -> int:
    while not ready.exists() or not ready.read_text():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the benchmark's process ended early with {process.returncode}")
        time.sleep(0.01)
    return int(ready.read_text())


def _signal_to_exit(pid: int, send: Callable[[], object]) -> float:
    """Seconds from `send()` (which signals `pid`) to the end of process `pid`."""
    descriptor = os.pidfd_open(pid)
    try:
        start = time.perf_counter()
        send()
        select.select([descriptor], [], [])
        return time.perf_counter() - start
    finally:
        os.close(descriptor)


def _child(kind: str, size_mib: int, directory: Path) -> float:
    ready = directory / f"{kind}.ready"
    command = [sys.executable, __file__, "--child", kind, "--size-mib", str(size_mib), "--dir", str(directory)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = _until_ready(ready, process)
        return _signal_to_exit(pid, lambda: os.kill(pid, signal.SIGTERM))
    finally:
        process.wait()


def _task(size_mib: int, directory: Path) -> float:
    import resilient

    ready = directory / "task.ready"
    job = resilient.job(run_dir=directory / "task-run", timeout_min=30)(_train)
    handle = job.submit(size_mib=size_mib, ready=str(ready))
    try:
        pid = _until_ready(ready)
        return _signal_to_exit(pid, handle.cancel)
    finally:
        handle.wait()


def _rows(best: dict[str, float], size_mib: float) -> list[Row]:
    return [row(name, size_mib, best[name], ANCHOR, best[ANCHOR], "s", ratio_of="resilient/anchor",
                at_most=TARGET_RATIO) for name in (TASK, PLAIN)]


def rows(size_mib: int, directory: str | os.PathLike[str], repeats: int = 3) -> list[Row]:
    """The table's rows for a state of `size_mib` (at least one layer of LAYER_MIB), saved under `directory`."""
    return _rows(_best(max(size_mib, LAYER_MIB), directory, repeats), _state_mib(size_mib))


def _state_mib(size_mib: int) -> int:
    """The size `_state` makes of `size_mib`: whole layers."""
    return max(1, size_mib // LAYER_MIB) * LAYER_MIB


def _best(size_mib: int, directory: str | os.PathLike[str], repeats: int) -> dict[str, float]:
    """Best seconds from the signal to the end of each kind of process, taking turns."""
    sys.path.insert(0, str(REPO))
    # the submitted task imports this module, by name when another script (all.py) imported it
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(Path(__file__).parent),
                                                             os.environ.get("PYTHONPATH")]))
    best = dict.fromkeys((ANCHOR, TASK, PLAIN), float("inf"))
    measure = {ANCHOR: lambda work: _child("anchor", size_mib, work), TASK: lambda work: _task(size_mib, work),
               PLAIN: lambda work: _child("plain", size_mib, work)}
    for _ in range(repeats):  # alternating: a busy moment slows every kind of its round alike
        for name, run in measure.items():
            work = Path(tempfile.mkdtemp(prefix="stop-to-exit-", dir=directory))
            try:
                best[name] = min(best[name], run(work))
            finally:
                shutil.rmtree(work)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".", help="directory on the filesystem checkpoints go to")
    parser.add_argument("--size-mib", type=int, default=1024, help="model plus AdamW state (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds, best one counts (default 3)")
    parser.add_argument("--quick", action="store_true", help="a tiny state (12 MiB), to see that it works")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--child", choices=("anchor", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    size_mib = LAYER_MIB if args.quick else args.size_mib
    if args.child:
        (_anchor if args.child == "anchor" else _plain)(size_mib, Path(args.dir), Path(args.dir) / f"{args.child}.ready")
        return
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    if size_mib < LAYER_MIB:
        parser.error(f"--size-mib must be at least {LAYER_MIB}")
    best = _best(size_mib, args.dir, args.repeats)
    measured = _rows(best, _state_mib(size_mib))
    print(f"state: {_state_mib(size_mib)} MiB (parameters + AdamW), directory: {os.path.abspath(args.dir)}, "
          f"best of {args.repeats} alternating rounds; target: resilient <= {TARGET_RATIO}x\n")
    print("| signal -> process exit | seconds | ratio to the handler |\n|---|---:|---:|")
    print(f"| {ANCHOR} | {best[ANCHOR]:.3f} | 1.00x |")
    for each in measured:
        print(f"| {each['what']} | {each['resilient']:.3f} | {each['ratio']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"size_mib": _state_mib(size_mib), "repeats": args.repeats,
                                               "anchor_s": best[ANCHOR], "rows": measured}, indent=2) + "\n")


if __name__ == "__main__":
    main()
