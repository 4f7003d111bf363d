"""A job that stops once at a boundary and leaves traces of how its process ended (for test_fast_exit.py).

Each start records, in files named by its pid: that its atexit handler ran, that its non-daemon
thread finished after the loop was left, and whether the interpreter's teardown finalized a
module-level object (the fast exit skips exactly that). What it printed last, without a
flush, must still reach its log.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from pathlib import Path

import torch
from torch import nn

import resilient


class _Finalized:
    """Writes into its file when finalized, which the interpreter's teardown does to module globals."""

    def __init__(self, path: Path) -> None:
        self._descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._write = os.write  # the module `os` may already be torn down when this runs

    def __del__(self) -> None:
        self._write(self._descriptor, b"finalized")


_finalized: _Finalized | None = None


def stop_once(run: resilient.Run, out_dir: str) -> int:
    """Train 8 steps; the first start sends itself the warning signal at step 3. Returns the pid."""
    global _finalized
    out, pid = Path(out_dir), os.getpid()
    _finalized = _Finalized(out / f"{pid}.teardown")
    atexit.register((out / f"{pid}.atexit").touch)
    left = threading.Event()

    def after_the_loop() -> None:
        left.wait()
        (out / f"{pid}.thread").touch()

    threading.Thread(target=after_the_loop).start()
    model = nn.Linear(4, 2)
    run.track(model=model)
    try:
        for _ in run.epochs(1):
            for _ in run.batches(torch.zeros(8, 4)):
                if run.step == 3 and not (out / "signalled").exists():
                    (out / "signalled").touch()
                    os.kill(pid, signal.SIGUSR2)
    finally:
        print(f"left the loop in {pid}")  # not flushed: a task's stdout is a file, so this is buffered
        left.set()
    return pid
