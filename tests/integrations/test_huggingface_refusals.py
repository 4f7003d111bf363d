"""What `Resilient` and `AcceleratorCheckpoints` refuse, in one process: a real Trainer (and a real
Accelerator) on CPU, world size 1, no subprocess.

Each refusal is one line naming the setting and the fix, and ends the run the callback owns: a
corrected second try in the same process (a notebook's cell run again) must find the run
directory free and the signal handlers given back, not "in use by" its own pid.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from resilient import Run
from resilient.cli import main
from resilient.integrations.huggingface import AcceleratorCheckpoints, Resilient
from resilient.requeue import SetupRefused
from resilient.rundir import State, read_status

_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class _Net(nn.Module):
    """The smallest model the Trainer trains: it takes `labels` and returns the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.layer(x), labels)}


class _Examples(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": torch.full((2,), float(index)), "labels": torch.ones(1)}


def _trainer(output_dir: Path, *callbacks: TrainerCallback, **settings: object) -> Trainer:
    """A Trainer on CPU that saves every step into `output_dir`."""
    args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to=[], disable_tqdm=True,
                             logging_strategy="no", per_device_train_batch_size=2, save_strategy="steps",
                             save_steps=1, **settings)
    return Trainer(model=_Net(), args=args, train_dataset=_Examples(), callbacks=list(callbacks))


@pytest.fixture
def handlers() -> Iterator[dict[int, object]]:
    """This process's signal handlers before the test, put back after it whatever the test left."""
    before = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    yield before
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


def _assert_refused(error: BaseException, run_dir: Path, handlers: dict[int, object], *names: str) -> None:
    """One line naming each of `names`; the owned run ended as failed (refused: never requeued), its
    directory free, the signals given back."""
    message = str(error)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message
    assert isinstance(error, SetupRefused)
    status = read_status(run_dir)
    assert status.state == State.FAILED and status.message.startswith("refused: "), status
    assert {signum: signal.getsignal(signum) for signum in _SIGNALS} == handlers
    with Run(checkpoint=[], run_dir=run_dir):  # the directory's lock was released
        pass


@pytest.mark.parametrize("setting", ["enable_jit_checkpoint", "save_only_model"])
def test_a_setting_that_defeats_resume_is_refused_when_the_trainer_is_made(
        tmp_path: Path, run_dir: Path, handlers: dict[int, object], setting: str) -> None:
    resilient = Resilient(run_dir=run_dir)
    with pytest.raises(ValueError) as refused:
        _trainer(tmp_path / "hf", resilient, max_steps=1, **{setting: True})
    _assert_refused(refused.value, run_dir, handlers, f"TrainingArguments({setting}=True)", "leave it False")


@pytest.fixture
def trained(tmp_path: Path, run_dir: Path, handlers: dict[int, object]) -> Path:
    """The Trainer's output directory after 2 steps through `Resilient`: checkpoint-1 and checkpoint-2, sealed."""
    resilient = Resilient(run_dir=run_dir)
    resilient.train(_trainer(tmp_path / "hf", resilient, max_steps=2))
    assert read_status(run_dir).state == State.COMPLETED
    return tmp_path / "hf"


@pytest.mark.parametrize("resume_from", [None, "checkpoint-1"])
def test_training_started_at_another_step_than_the_newest_valid_checkpoint_is_refused(
        trained: Path, run_dir: Path, handlers: dict[int, object], resume_from: str | None) -> None:
    """`trainer.train()` called directly, from scratch or from an older checkpoint, next to checkpoint-2."""
    resilient = Resilient(run_dir=run_dir)
    trainer = _trainer(trained, resilient, max_steps=3)
    assert resilient.resume_from == str(trained / "checkpoint-2")
    with pytest.raises(RuntimeError) as refused:
        trainer.train(resume_from_checkpoint=str(trained / resume_from) if resume_from else None)
    _assert_refused(refused.value, run_dir, handlers, f"starts at step {1 if resume_from else 0}",
                    f"newest valid checkpoint is {trained / 'checkpoint-2'}", "Resilient.train(trainer)",
                    "resume_from_checkpoint=")


def test_resilient_checkpoints_lists_the_checkpoints_the_trainer_wrote_and_resilient_sealed(
        trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command's name rule (`checkpoint-N`) against what the real Trainer writes."""
    assert main(["checkpoints", str(trained), "--verify"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[0], row[1], row[-2:]) for row in rows] == [
        ("checkpoint-2", "2", ["yes", "(checksums)"]), ("checkpoint-1", "1", ["yes", "(checksums)"])], rows


def test_train_refuses_resume_from_checkpoint(tmp_path: Path, run_dir: Path, handlers: dict[int, object]) -> None:
    resilient = Resilient(run_dir=run_dir)
    trainer = _trainer(tmp_path / "hf", resilient, max_steps=1)
    with pytest.raises(TypeError) as refused:
        resilient.train(trainer, resume_from_checkpoint=True)
    _assert_refused(refused.value, run_dir, handlers, "do not pass resume_from_checkpoint")


def test_train_refuses_a_trainer_made_without_the_callback(
        tmp_path: Path, run_dir: Path, handlers: dict[int, object]) -> None:
    resilient = Resilient(run_dir=run_dir)
    with pytest.raises(ValueError) as refused:
        resilient.train(_trainer(tmp_path / "hf", max_steps=1))
    _assert_refused(refused.value, run_dir, handlers, "not made with this callback", "callbacks=[")


def test_resume_from_before_the_trainer_is_made_is_refused(run_dir: Path, handlers: dict[int, object]) -> None:
    resilient = Resilient(run_dir=run_dir)
    with pytest.raises(RuntimeError) as refused:
        resilient.resume_from  # noqa: B018 (the property is what refuses)
    _assert_refused(refused.value, run_dir, handlers, "Resilient.resume_from", "Trainer(callbacks=[...]) first")


@pytest.mark.parametrize("keep", [0, -1, True, 1.5, "2"])
def test_accelerator_checkpoints_refuses_a_keep_that_is_no_count(
        run_dir: Path, handlers: dict[int, object], keep: object) -> None:
    with Run(checkpoint=[], run_dir=run_dir) as run, pytest.raises(ValueError) as refused:
        AcceleratorCheckpoints(Accelerator(cpu=True), run, keep=keep)  # type: ignore[arg-type]
    assert str(refused.value) == f"AcceleratorCheckpoints(keep={keep!r}): keep must be an int >= 1"


def test_accelerator_checkpoints_keeps_the_newest_keep(run_dir: Path, handlers: dict[int, object]) -> None:
    with Run(checkpoint=[], run_dir=run_dir) as run:
        accelerator = Accelerator(cpu=True)
        model = nn.Linear(2, 1)
        model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
        checkpoints = AcceleratorCheckpoints(accelerator, run, keep=1)
        for step in (1, 2):
            checkpoints.save(step)
    assert sorted(path.name for path in checkpoints.directory.iterdir()) == ["step=2.ckpt"]
