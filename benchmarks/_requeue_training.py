"""The training both sides of `benchmarks/vs_lightning_requeue.py` run on the SLURM cluster.

The same model, data and Trainer settings as `examples/lightning_classifier.py` (its `Classifier`),
started two ways:

- Lightning's own, as its SLURM docs tell users: `srun python -m benchmarks._requeue_training ...`
  from an sbatch script with `--signal=SIGUSR1@90 --requeue`, a Trainer with
  `SLURMEnvironment(auto_requeue=True)` and `ModelCheckpoint(every_n_train_steps=K)`, and `fit(model)`
  (Lightning resumes from its `hpc_ckpt_N.ckpt` by itself) or `fit(model, ckpt_path="last")`.
- resilient's: `resilient_train`, the job function of a job.yaml given to `resilient submit`, with
  the `Resilient` callback and the same `ModelCheckpoint`.

Both carry two instruments that change nothing of what is measured: `Probe` writes each start, each
optimizer step and how each start left `fit` to `probe.jsonl` (rank 0), and `Gate` holds every rank
at one step of the first start until a signal arrives there, so the preemption lands at a known step
without sleeps. The gate observes a signal by wrapping, for the time it waits, whatever handler is
installed then (Lightning's or resilient's) and calling it first, as the signal would have; a
process still alive `STACKS_AFTER_S` after that signal writes every thread's stack to
`stacks-<rank>.txt` (faulthandler), which shows where a start that never leaves is stuck.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import time
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import resilient
from examples.lightning_classifier import Classifier
from resilient.integrations.lightning import Resilient

PROBE = "probe.jsonl"
FINAL = "final.pt"  # rank 0's weights once fit has returned
WATCHED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
GATE_TIMEOUT_S = 300.0  # a gate no signal reaches lets the job go on; the benchmark reports it
STACKS_AFTER_S = 3.0  # a stopped start leaves well within this (SLURM kills 5 s after a requeue's SIGTERM)


class LightningResume(str, Enum):
    """How the Lightning side asks to resume on a requeued start."""

    HPC = "hpc"    # fit(model): Lightning picks its newest hpc_ckpt_N.ckpt on SLURM
    LAST = "last"  # fit(model, ckpt_path="last"): the newest of ModelCheckpoint's last files


def restart_count() -> int:
    """Which start of the job this is: SLURM leaves SLURM_RESTART_COUNT unset on the first."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0"))


class Probe(Callback):
    """Records, on rank 0, what the benchmark counts: each start (the step it resumed at, the
    checkpoint it loaded, the steps an uninterrupted fit makes), each optimizer step, and how
    the start left `fit`."""

    def __init__(self, probe_dir: Path) -> None:
        self.path = probe_dir / PROBE
        self.start = restart_count()
        self._last_step: int | None = None

    def record(self, trainer: pl.Trainer, event: str, **fields: Any) -> None:
        if trainer.global_rank == 0:
            with self.path.open("a") as probe:
                probe.write(json.dumps({"start": self.start, "event": event, **fields}) + "\n")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step
        ckpt_path = trainer.ckpt_path
        self.record(trainer, "start", step=trainer.global_step, total=trainer.estimated_stepping_batches,
                    ckpt_path=None if ckpt_path is None else os.fspath(ckpt_path), world_size=trainer.world_size)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self.record(trainer, "step", step=trainer.global_step)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.record(trainer, "left", step=trainer.global_step, how=type(exception).__name__)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, "left", step=trainer.global_step, how="finished")


class Gate(Callback):
    """Holds every rank of the first start after `step` until a signal reaches it (then the
    handler in place has run), writing `ready-<rank>` to `probe_dir` once it waits there."""

    def __init__(self, probe_dir: Path, step: int, step_seconds: float) -> None:
        self.probe_dir, self.step, self.step_seconds = probe_dir, step, step_seconds
        self._signalled = False

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        time.sleep(self.step_seconds)  # stands in for a bigger model
        if restart_count() != 0 or trainer.global_step != self.step:
            return
        wrapped = {signum: signal.getsignal(signum) for signum in WATCHED if callable(signal.getsignal(signum))}
        for signum, handler in wrapped.items():
            signal.signal(signum, self._observer(handler))
        try:
            (self.probe_dir / f"ready-{trainer.global_rank}").touch()
            deadline = time.monotonic() + GATE_TIMEOUT_S
            while not self._signalled and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            for signum, handler in wrapped.items():
                signal.signal(signum, handler)
        if self._signalled:  # the file stays open for the watchdog thread until the process ends
            stacks = (self.probe_dir / f"stacks-{trainer.global_rank}.txt").open("w")
            faulthandler.dump_traceback_later(STACKS_AFTER_S, file=stacks)

    def _observer(self, handler: Any) -> Any:
        def observe(signum: int, frame: FrameType | None) -> None:
            try:
                handler(signum, frame)
            finally:
                self._signalled = True
        return observe


def _trainer(probe_dir: Path, gate_step: int, step_seconds: float, nodes: int, epochs: int, root: Path,
             callbacks: list[Callback], plugins: list[Any]) -> pl.Trainer:
    """The Trainer both sides share: one rank per node (the cluster's nodes have one CPU each)."""
    return pl.Trainer(
        accelerator="cpu", devices=1, num_nodes=nodes, strategy="ddp" if nodes > 1 else "auto",
        max_epochs=epochs, deterministic=True, use_distributed_sampler=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
        callbacks=[Probe(probe_dir), Gate(probe_dir, gate_step, step_seconds), *callbacks], plugins=plugins,
    )


def _fit(trainer: pl.Trainer, probe_dir: Path, ckpt_path: str | None = None) -> None:
    pl.seed_everything(0, verbose=False)
    model = Classifier(lr=3e-3)
    trainer.fit(model, ckpt_path=ckpt_path)
    if trainer.global_rank == 0:
        torch.save(model.state_dict(), probe_dir / FINAL)


def resilient_train(run: resilient.Run, probe_dir: str, gate_step: int, every: int, nodes: int = 1,
                    epochs: int = 2, step_seconds: float = 0.02) -> int:
    """resilient's way: the job function `resilient submit` runs; returns the final step."""
    resilient_callback = Resilient(run)
    checkpoints = ModelCheckpoint(dirpath=run.run_dir / "checkpoints", every_n_train_steps=every, filename="{step}")
    trainer = _trainer(Path(probe_dir), gate_step, step_seconds, nodes, epochs, run.run_dir,
                       [checkpoints, resilient_callback], resilient_callback.plugins)
    _fit(trainer, Path(probe_dir))
    return trainer.global_step


def lightning_train(root: Path, probe_dir: Path, gate_step: int, every: int, nodes: int, epochs: int,
                    step_seconds: float, resume: LightningResume) -> None:
    """Lightning's way, as its SLURM docs have it: auto-requeue on, checkpoints every `every` steps."""
    checkpoints = ModelCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=every, filename="{step}",
                                  save_last=True)
    trainer = _trainer(probe_dir, gate_step, step_seconds, nodes, epochs, root, [checkpoints],
                       [SLURMEnvironment(auto_requeue=True)])
    _fit(trainer, probe_dir, ckpt_path="last" if resume is LightningResume.LAST else None)


def main() -> None:
    parser = argparse.ArgumentParser(description="Lightning's own SLURM auto-requeue: one task of the job")
    parser.add_argument("--root", type=Path, required=True, help="Trainer's default_root_dir (hpc_ckpt_N.ckpt)")
    parser.add_argument("--probe-dir", type=Path, required=True)
    parser.add_argument("--gate-step", type=int, required=True)
    parser.add_argument("--every", type=int, required=True, help="ModelCheckpoint(every_n_train_steps=...)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--step-seconds", type=float, default=0.02)
    parser.add_argument("--resume", type=LightningResume, choices=list(LightningResume), default=LightningResume.HPC)
    args = parser.parse_args()
    lightning_train(args.root, args.probe_dir, args.gate_step, args.every, args.nodes, args.epochs,
                    args.step_seconds, args.resume)


if __name__ == "__main__":
    main()
