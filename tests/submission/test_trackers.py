"""A requeued job logs on as one run: the same W&B run id at every start, one TensorBoard curve.

Real W&B (offline) and real TensorBoard event files, written by a job on submitit's local
executor that crashes after its checkpoint at step 8 and is requeued: the steps after that
checkpoint are trained, and logged, twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import resilient

from .jobs import make_job, wandb_environment

STEPS = 16  # 1 epoch of 16 batches


def _curve(log_dir: Path) -> list[tuple[int, float]]:
    """The loss curve TensorBoard shows for the run's TensorBoard version under `log_dir`."""
    (version,) = (log_dir / "tensorboard").iterdir()
    events = EventAccumulator(str(version))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("loss")]


def test_a_requeued_job_logs_on_as_one_wandb_run_and_one_tensorboard_curve(tmp_path: Path) -> None:
    reference_logs = tmp_path / "reference-logs"
    reference = make_job(tmp_path / "reference", timeout_min=5)
    assert reference.submit(out=str(tmp_path / "reference.pt"), epochs=1, log_dir=str(reference_logs)).result(timeout=300)

    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    job = make_job(run_dir, timeout_min=5, max_crash_requeues=1)
    handle = job.submit(out=str(tmp_path / "out.pt"), epochs=1, log_dir=str(logs), fresh_start_fails_at=10)
    assert handle.result(timeout=300) == {"step": STEPS, "world_size": 1}
    assert handle.status.requeues == {"crashed": 1}

    ids = json.loads((run_dir / "trackers.json").read_text())
    starts = sorted((logs / "wandb").glob("offline-run-*"))
    assert [start.name.rsplit("-", 1)[1] for start in starts] == [ids["wandb"]] * 2
    assert [path.name for path in (logs / "tensorboard").iterdir()] == [ids["tensorboard"]]
    curve = _curve(logs)
    assert [step for step, _ in curve] == list(range(STEPS))  # steps 8-10 logged twice, shown once
    assert curve == _curve(reference_logs)  # the values the uninterrupted run logged


def test_the_job_names_its_wandb_run_unless_the_user_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = resilient.job(checkpoint=[], run_dir=tmp_path / "run")(wandb_environment)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.setenv("WANDB_RESUME", "must")
    seen = job()
    assert seen == {"WANDB_RUN_ID": json.loads((tmp_path / "run" / "trackers.json").read_text())["wandb"],
                    "WANDB_RESUME": "must"}
    assert "WANDB_RUN_ID" not in os.environ and os.environ["WANDB_RESUME"] == "must"  # as before the job

    monkeypatch.setenv("WANDB_RUN_ID", "mine")
    monkeypatch.delenv("WANDB_RESUME")
    other = resilient.job(checkpoint=[], run_dir=tmp_path / "other")(wandb_environment)
    assert other() == {"WANDB_RUN_ID": "mine", "WANDB_RESUME": None}
    assert not (tmp_path / "other" / "trackers.json").exists()
