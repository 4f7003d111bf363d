"""A small but complete training job for the kill-and-resume tests.

It has everything that makes bitwise resume hard: shuffled data, dropout (RNG), SGD with
momentum (optimizer state), a per-step LR schedule, metrics for a top-k rule, and, with two
ranks, DistributedDataParallel on gloo. `--kill-at-step N` makes the process SIGKILL itself in
the middle of step N+1 (after backward, before the optimizer step), the worst moment;
`--signal-at-step N --signal NAME --signal-rank R` sends rank R a real signal at that moment
instead, the way a cluster warns of preemption or a time limit. `--augment` adds what vision
and audio training does in DataLoader workers (`--workers N`): random noise drawn from torch,
numpy and `random` in `__getitem__`, plus gradient clipping. `--fsdp` trains a transformer
block sharded with FSDP2 (`fully_shard`: no rank holds the whole model) with AdamW instead
(`--width N`, with or without `--fsdp`: another model of the same layout);
`--record-samples PREFIX` appends each step's sample indices to PREFIX-rank{r}.txt, and
`--dump-restored PATH` writes the whole model and optimizer state as restored (before training).
`--kill-in-commit-of-step N` makes rank 0 SIGKILL itself while the save of step N is held in
flight in the background, every file of it written and only its commit (the atomic rename) left.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, TensorDataset

import resilient


class Block(nn.Module):
    """A small transformer block over the 8 features as tokens, with dropout."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(1, width)
        self.layer = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=2 * width, dropout=0.1,
                                                batch_first=True)
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(x.unsqueeze(-1))).mean(dim=1))


def sharded_block(width: int = 16) -> tuple[nn.Module, torch.optim.Optimizer]:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(100)  # the same weights on every rank, each keeps its shard of them
    model = Block(width)
    fully_shard(model.layer)
    fully_shard(model)
    return model, torch.optim.AdamW(model.parameters(), lr=0.01)


def _full_weights(model: nn.Module, fsdp: bool, world_size: int) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0 (every rank calls it: FSDP gathers them)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return model.module.state_dict() if world_size > 1 else model.state_dict()


def dump_restored(model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool, rank: int, path: str) -> None:
    """The whole state as restored, keyed by parameter names (every rank calls it: FSDP gathers)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    if fsdp:
        weights, moments = get_state_dict(model, optimizer,
                                          options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        weights, moments = model.state_dict(), optimizer.state_dict()
    if rank == 0:
        torch.save({"model": weights, "optimizer": moments}, path)


class _CommitGate:
    """Holds the background writer that is about to commit the checkpoint named `name`, and
    tells the training thread it is there: a profile hook of the threads started from now on (the
    writer's), never of the training thread, so the save must really be in the background."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reached = threading.Event()
        threading.setprofile(self._hook)

    def _hook(self, frame: object, event: str, arg: object) -> None:
        code = getattr(frame, "f_code", None)
        if (event == "call" and code is not None and code.co_name == "commit"
                and getattr(frame, "f_globals", {}).get("__name__") == "resilient.checkpoint._atomic"
                and getattr(getattr(frame, "f_locals", {}).get("final"), "name", None) == self.name):
            self.reached.set()
            threading.Event().wait()  # held until the process dies


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random augmentation from all three generators a dataset author reaches for."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert type(index) is int  # the per-sample seed never reaches user code
        noise = 0.3 * torch.randn(self.inputs.shape[1]) + random.gauss(0, 0.1)
        scale = float(np.random.uniform(0.8, 1.2))
        return self.inputs[index] * scale + noise, self.targets[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--signal-at-step", type=int, default=None)
    parser.add_argument("--signal", default="USR2")
    parser.add_argument("--signal-rank", type=int, default=0)
    parser.add_argument("--step-seconds", type=float, default=0.0, help="simulated compute per step")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--persistent-workers", action="store_true")
    parser.add_argument("--sync", action="store_true", help="save before training goes on (no async_save)")
    parser.add_argument("--fsdp", action="store_true", help="a transformer block sharded with FSDP2, AdamW")
    parser.add_argument("--width", type=int, default=16, help="the transformer block's width (another model)")
    parser.add_argument("--record-samples", help="append each step's sample indices to PREFIX-rank{r}.txt")
    parser.add_argument("--dump-restored", help="write the restored model and optimizer state here, then train")
    parser.add_argument("--kill-in-commit-of-step", type=int, default=None)
    args = parser.parse_args()
    gate = None if args.kill_in_commit_of_step is None else _CommitGate(f"step={args.kill_in_commit_of_step}.ckpt")

    data = torch.Generator().manual_seed(1234)
    inputs = torch.randn(96, 8, generator=data)
    targets = (inputs.sum(dim=1) > 0).long()
    dataset = Augmented(inputs, targets) if args.augment else TensorDataset(inputs, targets, torch.arange(96))
    if args.fsdp and "WORLD_SIZE" not in os.environ:  # FSDP needs a process group, even of one
        import tempfile

        torch.distributed.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)

    rules = [
        resilient.ModelCheckpoint(every_n_train_steps=2, filename="{step}"),
        resilient.ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True),
    ]
    with resilient.Run(checkpoint=rules, run_dir=args.run_dir, async_save=not args.sync) as run:
        model: nn.Module
        if args.fsdp:
            model, optimizer = sharded_block(args.width)
            torch.manual_seed(100 + run.rank)  # dropout differs by rank, as it does in real jobs
        else:
            torch.manual_seed(100 + run.rank)
            model = nn.Sequential(nn.Linear(8, 2 * args.width), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(2 * args.width, 2))
            if run.world_size > 1:
                model = DistributedDataParallel(model)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.7)
        sampler = resilient.ResumableSampler(dataset, shuffle=True, seed=7)
        loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=args.workers,
                            persistent_workers=args.persistent_workers)
        run.track(model=model, optimizer=optimizer, schedule=schedule, sampler=sampler)
        if args.dump_restored:
            dump_restored(model, optimizer, args.fsdp, run.rank, args.dump_restored)

        for _ in run.epochs(args.epochs):
            model.train()
            for x, y, *index in run.batches(loader):
                if args.record_samples:
                    with open(f"{args.record_samples}-rank{run.rank}.txt", "a") as record:
                        record.write(f"{run.epoch} {' '.join(str(i) for i in index[0].tolist())}\n")
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                if args.augment:
                    nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
                if args.kill_at_step is not None and run.step == args.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                if gate is not None and run.rank == 0 and run.step == args.kill_in_commit_of_step:
                    if not gate.reached.wait(timeout=120):
                        sys.exit("the armed save never reached its commit in a background thread")
                    os.kill(os.getpid(), signal.SIGKILL)
                if args.signal_at_step == run.step and args.signal_rank == run.rank:
                    os.kill(os.getpid(), getattr(signal, "SIG" + args.signal))
                optimizer.step()
                schedule.step()
                time.sleep(args.step_seconds)
                run.log("train_loss", loss)
            model.eval()
            with torch.no_grad():
                run.log("val_loss", nn.functional.cross_entropy(model(inputs), targets))

        weights = _full_weights(model, args.fsdp, run.world_size)
        if run.rank == 0:
            torch.save(weights, args.out)
            print(json.dumps({"step": run.step, "resumed_from": run.resumed_from}), flush=True)


if __name__ == "__main__":
    main()
