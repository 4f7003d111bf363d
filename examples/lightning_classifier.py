"""A Lightning `Trainer` as a resilient job: what `examples/lightning.yaml` runs.

The job function takes the `Run` first, hands it to `Resilient`, and fits as usual: no
`ckpt_path`, no signal handling, no requeue code. The loader is one Lightning can resume in the
middle of an epoch (torchdata's `StatefulDataLoader`), and its sampler starts at the epoch
being resumed; with both, a preempted job ends with the weights of one never preempted.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DistributedSampler, TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

import resilient
from resilient.integrations.lightning import Resilient


class Classifier(pl.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> StatefulDataLoader:
        inputs = torch.randn(448, 16, generator=torch.Generator().manual_seed(0))
        data = TensorDataset(inputs, (inputs[:, :8].sum(dim=1) > 0).long())
        sampler = DistributedSampler(data, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank,
                                     shuffle=True, seed=0)
        sampler.set_epoch(self.trainer.current_epoch)  # Lightning sets it only after the resumed epoch began
        return StatefulDataLoader(data, batch_size=32, sampler=sampler)


class Pace(Callback):
    """Stands in for a bigger model; `gate_steps` hold the job at those steps until `go-N` appears in
    `gate_dir` or a stop signal arrives (the SLURM tests preempt it there)."""

    def __init__(self, run: resilient.Run, step_seconds: float, gate_dir: str | None, gate_steps: list[int]) -> None:
        self.run, self.step_seconds, self.gate_steps = run, step_seconds, gate_steps
        self.gate = Path(gate_dir) if gate_dir else None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        time.sleep(self.step_seconds)
        if self.gate is not None and trainer.global_step in self.gate_steps:
            ready, go = self.gate / f"ready-{trainer.global_step}", self.gate / f"go-{trainer.global_step}"
            ready.touch()
            while not go.exists() and not self.run._signals.received:  # a test's gate peeks at the recorder
                time.sleep(0.01)


def train(run: resilient.Run, lr: float = 3e-3, epochs: int = 4, step_seconds: float = 0.0,
          out: str | None = None, gate_dir: str | None = None, gate_steps: list[int] | None = None) -> str:
    pl.seed_everything(0, verbose=False)
    resilient_callback = Resilient(run)  # signals, agreement, emergency checkpoint, requeue, resume
    trainer = pl.Trainer(
        accelerator="cpu", devices=run.world_size, strategy="ddp" if run.world_size > 1 else "auto",
        max_epochs=epochs, deterministic=True, use_distributed_sampler=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=run.run_dir,
        callbacks=[ModelCheckpoint(dirpath=run.run_dir / "checkpoints", every_n_train_steps=10, filename="{step}"),
                   Pace(run, step_seconds, gate_dir, gate_steps or []), resilient_callback],
        plugins=resilient_callback.plugins,
    )
    model = Classifier(lr)
    trainer.fit(model)  # resumes from the newest valid checkpoint by itself
    if resilient_callback.resumed_from and run.rank == 0:
        print(f"resumed from {resilient_callback.resumed_from}", flush=True)
    if out is not None and run.rank == 0:
        torch.save(model.state_dict(), out)
    return f"step {trainer.global_step}"
