"""A Hugging Face `Trainer` as a resilient job: what `examples/huggingface.yaml` runs.

The job function takes the `Run` first, hands it to `Resilient`, and trains through
`resilient_callback.train(trainer)`, which passes the newest valid checkpoint as
`resume_from_checkpoint`: no signal handling, no requeue code, no checkpoint bookkeeping. The
Trainer itself restores each rank's RNG states and skips the batches already trained in the
resumed epoch, so a preempted job ends with the weights of one never preempted.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

import resilient
from resilient.integrations.huggingface import Resilient


class Classifier(nn.Module):
    """Any module whose forward takes the batch's columns and returns a loss will do (a PreTrainedModel too)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 2))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class Examples(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        self.x = torch.randn(448, 16, generator=torch.Generator().manual_seed(0))
        self.y = (self.x[:, :8].sum(dim=1) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "labels": self.y[index]}


class Pace(TrainerCallback):
    """Stands in for a bigger model, so that a fire drill or `resilient preempt` has time to land."""

    def __init__(self, step_seconds: float) -> None:
        self.step_seconds = step_seconds

    def on_step_end(self, *args: object, **kwargs: object) -> None:
        time.sleep(self.step_seconds)


def train(run: resilient.Run, lr: float = 3e-3, epochs: int = 4, step_seconds: float = 0.0,
          out: str | None = None) -> str:
    resilient_callback = Resilient(run)  # signals, agreement, atomic commit, rotation, resume
    args = TrainingArguments(
        output_dir=str(run.run_dir / "hf"), per_device_train_batch_size=32 // run.world_size,
        num_train_epochs=epochs, learning_rate=lr, seed=0, data_seed=0, use_cpu=True,
        ddp_backend="gloo" if run.world_size > 1 else None,  # one rank: no process group to speak of
        save_strategy="steps", save_steps=10, save_total_limit=2, logging_strategy="no", report_to=[],
        disable_tqdm=True, ddp_find_unused_parameters=False,
    )
    torch.manual_seed(0)
    model = Classifier()
    trainer = Trainer(model=model, args=args, train_dataset=Examples(),
                      callbacks=[Pace(step_seconds), resilient_callback])
    result = resilient_callback.train(trainer)  # resumes from the newest valid checkpoint-N by itself
    if resilient_callback.resume_from and run.rank == 0:
        print(f"resumed from {resilient_callback.resume_from}", flush=True)
    if out is not None and run.rank == 0:
        torch.save(model.state_dict(), out)
    return f"step {result.global_step}"
