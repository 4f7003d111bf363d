"""A small classifier, as a job function: what `examples/quickstart.yaml` runs.

A job function takes the `Run` first, then the arguments the job file's `args` gives it.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import resilient


def train(run: resilient.Run, lr: float = 3e-3, epochs: int = 5, step_seconds: float = 0.0) -> str:
    torch.manual_seed(0)
    inputs = torch.randn(512, 16)
    dataset = TensorDataset(inputs, (inputs[:, :8].sum(dim=1) > 0).long())
    train_set, val_set = torch.utils.data.random_split(dataset, [448, 64], generator=torch.Generator().manual_seed(0))

    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loader = DataLoader(train_set, batch_size=32, sampler=resilient.ResumableSampler(train_set, seed=0))
    run.track(model=model, optimizer=optimizer)  # restores all of it when a checkpoint exists
    if run.resumed_from:
        print(f"resumed from {run.resumed_from} at epoch {run.epoch}, step {run.step}", flush=True)

    val_loss = float("nan")  # a run resumed after its last epoch trains no more
    for epoch in run.epochs(epochs):
        model.train()
        for x, y in run.batches(loader):  # each step boundary: checkpoint rules, preemption
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log("train_loss", loss)
            time.sleep(step_seconds)  # stands in for a bigger model
        model.eval()
        with torch.no_grad():
            x, y = val_set[:]
            val_loss = nn.functional.cross_entropy(model(x), y)
        run.log("val_loss", val_loss)
        print(f"epoch {epoch}: step {run.step}, val_loss {val_loss:.4f}", flush=True)
    return f"final val_loss {val_loss:.4f}"
