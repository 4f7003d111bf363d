"""A save the storage refuses: the run says why, stops or goes on as `on_save_error` says, and
every way it ends leaves a final state, an end event and the older checkpoints intact."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import resilient
from resilient.checkpoint import CheckpointWriteError


def _state(megabytes: float) -> torch.nn.Module:
    return torch.nn.Linear(int(megabytes * 2**20 / 4), 1, bias=False)  # float32 weights


def _events(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _visible_checkpoints(run_dir: Path) -> list[str]:
    return sorted(path.name for path in run_dir.glob("checkpoints/**/*.ckpt"))


def test_a_failed_periodic_save_stops_the_run_naming_the_cause(small_filesystem: Path) -> None:
    run_dir = small_filesystem
    rule = resilient.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, filename="{step}")
    model = _state(0.6)
    with pytest.raises(CheckpointWriteError) as caught:
        with resilient.Run(checkpoint=[rule], run_dir=run_dir) as run:
            run.track(model=model)
            for _ in run.batches(range(4)):
                pass
    assert caught.value.errno == errno.ENOSPC
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed"
    assert "No space left on device" in status["message"] and str(run_dir) in status["message"]
    assert _events(run_dir)[-1]["event"] == "failed"
    assert _visible_checkpoints(run_dir) == ["step=1.ckpt", "step=2.ckpt", "step=3.ckpt"]  # what fitted is intact
    for name in ("step=1.ckpt", "step=2.ckpt", "step=3.ckpt"):
        resilient.load_checkpoint(run_dir / "checkpoints" / name)


def test_on_save_error_continue_trains_on_and_forgets_the_failed_saves(small_filesystem: Path) -> None:
    run_dir = small_filesystem
    rule = resilient.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, filename="{step}")
    model = _state(0.6)
    with resilient.Run(checkpoint=[rule], run_dir=run_dir, on_save_error="continue") as run:
        run.track(model=model)
        for _ in run.batches(range(5)):
            pass
    assert run.step == 5
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    failed = [event for event in _events(run_dir) if event["event"] == "checkpoint_failed"]
    assert [event["step"] for event in failed] == [4, 5]  # three 0.6 MiB checkpoints fill 2 MiB
    assert all("No space left on device" in str(event["error"]) for event in failed)
    assert _visible_checkpoints(run_dir) == ["step=1.ckpt", "step=2.ckpt", "step=3.ckpt"]
    assert os.path.basename(rule.best_model_path) == "step=3.ckpt"  # the rule names only what exists


def test_a_failed_emergency_checkpoint_ends_the_run_as_failed_not_running(small_filesystem: Path) -> None:
    run_dir = small_filesystem
    model = _state(3)  # the emergency checkpoint cannot fit
    with pytest.raises(CheckpointWriteError):
        with resilient.Run(checkpoint=[], run_dir=run_dir) as run:
            run.track(model=model)
            for _ in run.batches(range(4)):
                if run.step == 1:
                    os.kill(os.getpid(), signal.SIGUSR2)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "No space left on device" in status["message"]
    assert [event["event"] for event in _events(run_dir)][-2:] == ["signal", "failed"]
    assert _visible_checkpoints(run_dir) == []


def test_on_save_error_is_checked() -> None:
    with pytest.raises(ValueError, match="on_save_error must be one of stop, continue, not 'ignore'"):
        resilient.Run(checkpoint=[], on_save_error="ignore")


def test_the_job_decorator_takes_on_save_error_and_checks_it() -> None:
    assert resilient.job(on_save_error="continue")(lambda run: None).options.on_save_error == "continue"
    with pytest.raises(ValueError, match="on_save_error must be one of stop, continue"):
        resilient.job(on_save_error="retry")


@pytest.fixture()
def immutable() -> Iterator[Callable[[Path], None]]:
    """Make a directory immutable (``chattr +i``: not even root may rename or delete it), a real
    refusal of the deletion that an eviction does; undone afterwards so the test can clean up."""
    made: list[Path] = []

    def make(path: Path) -> None:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        made.append(path)

    yield make
    for path in made:
        if path.exists():
            subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("async_save", [False, True])
def test_a_checkpoint_that_cannot_be_evicted_is_a_warning_and_the_next_resume_deletes_it(
        tmp_path: Path, immutable: Callable[[Path], None], async_save: bool) -> None:
    """Deleting what a new checkpoint replaces comes after its commit: failing is no failed save."""
    rule = resilient.ModelCheckpoint(every_n_train_steps=1, save_top_k=1, filename="{step}")
    first = tmp_path / "checkpoints" / "step=1.ckpt"
    with pytest.warns(UserWarning, match=r"deleting .*step=1\.ckpt, which a new checkpoint replaces.*failed"):
        with resilient.Run(checkpoint=[rule], run_dir=tmp_path, async_save=async_save) as run:
            run.track(model=_state(0.01))
            for _ in run.batches(range(3)):
                if run.step == 1:
                    run.save_checkpoint(tmp_path / "manual.ckpt")  # waits for the step-1 save to commit
                    immutable(first)
    assert [event["step"] for event in _events(tmp_path) if event["event"] == "checkpoint"] == [1, 1, 2, 3]
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "completed"
    assert _visible_checkpoints(tmp_path) == ["step=1.ckpt", "step=3.ckpt"]
    subprocess.run(["chattr", "-i", str(first)], check=True)
    with resilient.Run(checkpoint=[rule], run_dir=tmp_path) as run:
        run.track(model=_state(0.01))
    assert _visible_checkpoints(tmp_path) == ["step=3.ckpt"]
