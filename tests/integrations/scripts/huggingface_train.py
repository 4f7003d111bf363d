"""A tiny Hugging Face Trainer job with `Resilient`, run as one process per rank by tests/integrations.

Options make one rank send itself a real signal, or SIGKILL, after a given optimizer step, or
SIGKILL itself inside a save (after the Trainer wrote checkpoint-N and rotated, before the commit):
from callbacks, so the moment is an event of the job, not a guess of the test's.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import torch
from _arguments import job_parser  # beside this script, first on sys.path when it runs
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from resilient.integrations.huggingface import Resilient


class Net(nn.Module):
    """Dropout makes the result depend on each rank's RNG state, which a resume must restore."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.layer = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.layer(self.drop(x))
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


class Examples(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 8, generator=generator), torch.randn(64, 1, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "labels": self.y[index]}


class SignalAt(TrainerCallback):
    """Rank `rank` sends itself `signum` once optimizer step `step` is done (`in_save`: once the
    Trainer has written that step's checkpoint, before any later callback sees it)."""

    def __init__(self, step: int, signum: int, rank: int, in_save: bool) -> None:
        self.step, self.signum, self.rank, self.in_save = step, signum, rank, in_save

    def _maybe(self, args: TrainingArguments, step: int) -> None:
        if step == self.step and args.process_index == self.rank:
            os.kill(os.getpid(), self.signum)

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.in_save:
            self._maybe(args, state.global_step)

    def on_save(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.in_save:
            self._maybe(args, state.global_step)


def main() -> None:
    parser = job_parser()
    parser.add_argument("--in-save", action="store_true")
    parser.add_argument("--save-total-limit", type=int, default=2)
    args = parser.parse_args()

    resilient = Resilient(run_dir=args.run_dir)  # first: it joins the ranks and takes the signals
    callbacks: list[TrainerCallback] = []
    if args.signal_at_step is not None:
        callbacks.append(SignalAt(args.signal_at_step, getattr(signal, f"SIG{args.signal}"), args.signal_rank,
                                  args.in_save))
    training = TrainingArguments(
        output_dir=str(args.run_dir / "hf"), per_device_train_batch_size=4, num_train_epochs=3, learning_rate=0.05,
        use_cpu=True, ddp_backend="gloo", seed=0, data_seed=0, save_strategy="steps", save_steps=5,
        save_total_limit=args.save_total_limit, logging_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, ddp_find_unused_parameters=False,
    )
    torch.manual_seed(0)
    model = Net()
    trainer = Trainer(model=model, args=training, train_dataset=Examples(), callbacks=[*callbacks, resilient])
    resumed = resilient.resume_from
    resilient.train(trainer)
    if training.process_index == 0:
        print(f"resumed from {resumed}", flush=True)
        torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
