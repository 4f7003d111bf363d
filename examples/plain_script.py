"""A plain script with `resilient.Run` (no submission): kill it and run it again to resume.

    python examples/plain_script.py                 # trains 5 epochs in a few seconds on CPU
    python examples/plain_script.py --stop-at 23    # simulate a crash at step 23 ...
    python examples/plain_script.py                 # ... and this run resumes at step 20

(`--stop-at` only crashes a fresh start: given again to a run that resumes, it is ignored.
Saves are written in the background: if the kill catches step 20's still being written, the
run resumes from the newest one committed before it, step 14's, and never from a torn one.)

A SIGTERM (or SIGUSR2) instead makes it checkpoint at the next step and exit with code 75;
starting it again resumes from that very step. Checkpoints go to runs/plain_script/checkpoints.
"""

from __future__ import annotations

import argparse
import os
import signal

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import resilient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/plain_script")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="SIGKILL this process during that step (a fresh start only)")
    args = parser.parse_args()

    torch.manual_seed(0)
    inputs = torch.randn(512, 16)
    dataset = TensorDataset(inputs, (inputs[:, :8].sum(dim=1) > 0).long())
    train, val = torch.utils.data.random_split(dataset, [448, 64], generator=torch.Generator().manual_seed(0))

    rules = [
        resilient.ModelCheckpoint(  # the 2 best epochs by validation loss, plus last.ckpt
            filename="{epoch:02d}-{val_loss:.3f}", monitor="val_loss", mode="min", save_top_k=2, save_last=True
        ),
        resilient.ModelCheckpoint(every_n_train_steps=10, filename="{step}"),  # the latest, every 10 steps
    ]
    with resilient.Run(checkpoint=rules, run_dir=args.run_dir) as run:
        model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 2))
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        loader = DataLoader(train, batch_size=32, sampler=resilient.ResumableSampler(train, seed=0))
        run.track(model=model, optimizer=optimizer)
        if run.resumed_from:
            print(f"resumed from {run.resumed_from} at epoch {run.epoch}, step {run.step}")

        for epoch in run.epochs(args.epochs):
            model.train()
            for x, y in run.batches(loader):
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                if run.step + 1 == args.stop_at and not run.resumed_from:
                    print(f"crashing on purpose in step {args.stop_at} (SIGKILL); run "
                          "`python examples/plain_script.py` to resume from the last checkpoint", flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)  # as hard as a crash gets
                optimizer.step()
                run.log("train_loss", loss)
            model.eval()
            with torch.no_grad():
                x, y = val[:]
                val_loss = nn.functional.cross_entropy(model(x), y)
            run.log("val_loss", val_loss)
            print(f"epoch {epoch}: step {run.step}, val_loss {val_loss:.4f}")

        print(f"best checkpoint: {rules[0].best_model_path} (val_loss {rules[0].best_model_score:.4f})")


if __name__ == "__main__":
    main()
