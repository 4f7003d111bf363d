"""`@resilient.job` from Python: call the function to run it here, or `.submit()` it.

    python -m examples.decorator      # from the repository root

submits the classifier to the local executor, fire-drills it once while it trains, and prints
its result after it has checkpointed, restarted and resumed.
"""

from __future__ import annotations

import time

import resilient
from examples.classifier import train as train_classifier


@resilient.job(checkpoint=resilient.ModelCheckpoint(every_n_train_steps=10), executor="local", timeout_min=10,
               run_dir="runs/decorator")
def train(run: resilient.Run, lr: float = 3e-3) -> str:
    return train_classifier(run, lr=lr, step_seconds=0.05)


if __name__ == "__main__":
    handle = train.submit(lr=3e-3)  # train(lr=3e-3) would run it in this process instead
    print(f"submitted job {handle.job_id}; logs in {handle.log_path()}")
    while handle.state == "pending":
        time.sleep(0.5)
    time.sleep(2)  # let it train a little
    if not handle.done():  # run twice, the run has completed: there is nothing to drill
        handle.preempt()  # what the cluster does before a preemption
    print(handle.result())  # waits through the requeue
    print(f"state {handle.state}, requeues {handle.status.requeues}")
