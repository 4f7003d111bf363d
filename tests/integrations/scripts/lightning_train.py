"""A tiny Lightning job with `Resilient`, run as one process per rank by tests/integrations.

Options make one rank send itself a real signal, or SIGKILL, after a given optimizer step
(from a callback, so the moment is an event of the job, not a guess of the test's).
"""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl
import torch
from _arguments import job_parser  # beside this script, first on sys.path when it runs
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torchdata.stateful_dataloader import StatefulDataLoader

from resilient.integrations.lightning import Resilient


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 1)
        self.dropout = nn.Dropout(0.25)  # draws from each rank's generator: a resume must restore them

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.layer(self.dropout(x)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    def train_dataloader(self) -> StatefulDataLoader:
        """A loader Lightning can resume mid-epoch (a StatefulDataLoader), whose sampler starts at the
        epoch being resumed: Lightning makes the resumed epoch's iterator before it sets the epoch."""
        torch.manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 1))
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=self.trainer.world_size,
                                                      rank=self.trainer.global_rank, shuffle=True, seed=0)
        sampler.set_epoch(self.trainer.current_epoch)
        return StatefulDataLoader(data, batch_size=4, sampler=sampler)


class SignalAt(Callback):
    """Rank `rank` sends itself `signum` once optimizer step `step` is done."""

    def __init__(self, step: int, signum: int, rank: int) -> None:
        self.step, self.signum, self.rank = step, signum, rank

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            os.kill(os.getpid(), self.signum)


def main() -> None:
    parser = job_parser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every-n-steps", type=int, default=5)
    args = parser.parse_args()

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    pl.seed_everything(0, verbose=False)
    resilient = Resilient(run_dir=args.run_dir)  # before the Trainer: it joins the ranks and takes the signals
    callbacks: list[Callback] = [ModelCheckpoint(dirpath=args.run_dir / "checkpoints", filename="{step}",
                                                 every_n_train_steps=args.every_n_steps, save_top_k=-1)]
    if args.signal_at_step is not None:
        callbacks.append(SignalAt(args.signal_at_step, getattr(signal, f"SIG{args.signal}"), args.signal_rank))
    trainer = pl.Trainer(
        accelerator="cpu", devices=world_size, strategy="ddp" if world_size > 1 else "auto", max_epochs=args.epochs,
        use_distributed_sampler=False,
        deterministic=True, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=args.run_dir, callbacks=[*callbacks, resilient], plugins=resilient.plugins,
    )
    model = Net()
    trainer.fit(model)
    if trainer.global_rank == 0:
        print(f"resumed from {resilient.resumed_from}", flush=True)
        torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
