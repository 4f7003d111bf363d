"""A job whose background save fails on rank 0 (a file-size limit, EFBIG): where does each rank learn it?

At step `--fail-at-step`, rank 0 lowers its RLIMIT_FSIZE below the size of the model's payload
(but well above the run's small files: events, status) so that the save started at that step's
boundary fails in the writer thread, and then waits for that thread to end, so that the failure
is there to be seen at the very next boundary. Each rank prints, as JSON, the step at which the
failure reached it and what it raised (or the step it finished at).
"""

from __future__ import annotations

import argparse
import json
import resource
import threading

import torch
from torch import nn

import resilient


def _wait_for_the_writer() -> None:
    for thread in threading.enumerate():
        if thread.name == "resilient-checkpoint-writer":
            thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--fail-at-step", type=int, required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--on-save-error", default="stop")
    parser.add_argument("--every", type=int, default=1, help="every_n_train_steps")
    args = parser.parse_args()

    model = nn.Linear(256, 256)  # a 257 KiB payload
    rule = resilient.ModelCheckpoint(every_n_train_steps=args.every, save_top_k=-1, filename="{step}")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    report: dict[str, object] = {}
    try:
        with resilient.Run(checkpoint=[rule], run_dir=args.run_dir, on_save_error=args.on_save_error) as run:
            report["rank"] = run.rank
            run.track(model=model)
            for _ in run.batches(range(args.steps)):
                with torch.no_grad():
                    model.weight.add_(1.0)
                if run.rank == 0 and run.step + 1 == args.fail_at_step:
                    _wait_for_the_writer()  # the save before is written under the usual limit
                    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, limit[1]))
                if run.rank == 0 and run.step == args.fail_at_step:  # its save is in flight: let it fail
                    _wait_for_the_writer()
                    resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        report.update(finished_at=run.step)
    except Exception as error:
        report.update(step=run.step, error=type(error).__name__, message=str(error))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
