"""Data-parallel training (DDP) as a job function: one process per rank, gloo on CPU, NCCL on GPUs.

`resilient` sets up torch.distributed from the job's environment (torchrun's variables, SLURM's,
or the local executor's) before the function runs; the function only wraps its model in DDP and
shards its data with `ResumableSampler`, which resumes mid-epoch on every rank.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import resilient


def train(run: resilient.Run, lr: float = 0.05, epochs: int = 4, step_seconds: float = 0.0) -> float:
    """Returns the loss over the whole data set after training."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    inputs = torch.randn(1024, 32, generator=torch.Generator().manual_seed(0))
    dataset = TensorDataset(inputs, (inputs[:, :16].sum(dim=1) > 0).long())
    torch.manual_seed(0)  # the same initial weights on every rank
    model = DistributedDataParallel(nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 2)).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    sampler = resilient.ResumableSampler(dataset, seed=0)  # shards by rank, like DistributedSampler
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)
    run.track(model=model, optimizer=optimizer, scheduler=scheduler)

    for epoch in run.epochs(epochs):
        for x, y in run.batches(loader):
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log("train_loss", loss)
            time.sleep(step_seconds)  # stands in for a bigger model
        scheduler.step()
        full_loss = _loss(model, dataset, device)
        if run.rank == 0:
            print(f"epoch {epoch}: step {run.step}, loss {full_loss:.4f}", flush=True)
    return _loss(model, dataset, device)


def _loss(model: nn.Module, dataset: TensorDataset, device: torch.device) -> float:
    with torch.no_grad():
        x, y = dataset[:]
        return nn.functional.cross_entropy(model(x.to(device)), y.to(device)).item()
