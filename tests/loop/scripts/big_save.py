"""A job with a large state that SIGKILLs itself while a checkpoint is being written.

A watcher thread is armed during step `--kill-in-save-of-step`; the moment the checkpoint for
that step exists as a temporary directory (being written, not yet committed) it kills the
process, leaving a partial checkpoint on disk for the restart to cope with.
`--interrupt-twice-in-save-of-step` instead presses Ctrl-C during that step (a stop at the next
boundary) and again the moment that stop's checkpoint is being written (stop now).
`--sync` saves before training goes on; by default saves are written in the background, and the
kill lands while one is in flight (the one for the step before, or for this step).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

import torch
from torch import nn

import resilient


def _signal_when_writing(directory: Path, armed: threading.Event, signum: int) -> None:
    armed.wait()
    while True:
        if directory.is_dir() and any(".tmp-" in entry.name for entry in os.scandir(directory)):
            os.kill(os.getpid(), signum)
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--kill-in-save-of-step", type=int, default=None)
    parser.add_argument("--interrupt-twice-in-save-of-step", type=int, default=None)
    parser.add_argument("--sync", action="store_true")
    args = parser.parse_args()

    armed = threading.Event()
    checkpoints = Path(args.run_dir) / "checkpoints"
    signum = signal.SIGKILL if args.interrupt_twice_in_save_of_step is None else signal.SIGINT
    threading.Thread(target=_signal_when_writing, args=(checkpoints, armed, signum), daemon=True).start()

    model = nn.ParameterList([nn.Parameter(torch.zeros(16, 1024, 1024)) for _ in range(4)])  # 256 MiB
    rule = resilient.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, filename="{step}")
    with resilient.Run(checkpoint=[rule], run_dir=args.run_dir, async_save=not args.sync) as run:
        run.track(model=model)
        restored_value = float(model[0][0, 0, 0])
        for _ in run.batches(range(args.steps)):
            with torch.no_grad():
                for param in model:
                    param.add_(1.0)
            if run.step + 1 == args.kill_in_save_of_step:
                armed.set()
            if run.step + 1 == args.interrupt_twice_in_save_of_step:
                os.kill(os.getpid(), signal.SIGINT)
                armed.set()
        print(json.dumps({"resumed_from": run.resumed_from, "restored_value": restored_value, "step": run.step}))


if __name__ == "__main__":
    main()
