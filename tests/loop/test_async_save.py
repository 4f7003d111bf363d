"""Asynchronous saves: a checkpoint counts only once committed, one is in flight at most, and a
background failure reaches every rank at the same step boundary.

Where a test must know that the background write has ended, it joins the writer thread by name
(the loop itself never joins it; see `loop/_background.py`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

import resilient

from ._jobs import rank_envs

SCRIPT = Path(__file__).parent / "scripts" / "failing_background_save.py"


def _wait_for_the_writer() -> None:
    for thread in threading.enumerate():
        if thread.name == "resilient-checkpoint-writer":
            thread.join()


def _events(run_dir: Path, kind: str) -> list[dict[str, object]]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == kind]


def test_an_older_checkpoint_is_evicted_only_once_the_newer_one_is_committed(tmp_path: Path) -> None:
    rule = resilient.ModelCheckpoint(every_n_train_steps=2, filename="{step}")  # keeps the latest only
    model = torch.nn.Linear(512, 512)
    checkpoints = tmp_path / "checkpoints"
    seen, committed = [], []
    with resilient.Run(checkpoint=[rule], run_dir=tmp_path) as run:
        run.track(model=model)
        for _ in run.batches(range(9)):
            if run.step == 2:
                _wait_for_the_writer()  # the first checkpoint is committed
            if run.step >= 2:  # from now on one is whole on disk, whatever is being written
                seen.append(sorted(path.name for path in checkpoints.glob("*.ckpt")))
            if run.step == 6:
                _wait_for_the_writer()
                committed += [sorted(path.name for path in checkpoints.glob("*.ckpt")),
                              [event["step"] for event in _events(tmp_path, "checkpoint")]]
    for names in seen:
        assert names in (["step=2.ckpt"], ["step=4.ckpt"], ["step=6.ckpt"], ["step=2.ckpt", "step=4.ckpt"],
                         ["step=4.ckpt", "step=6.ckpt"])  # never none: the older goes after the newer commits
    assert committed == [["step=6.ckpt"], [2, 4, 6]]  # committed: recorded, and the older one evicted
    assert rule.best_model_path.endswith("step=8.ckpt")
    assert sorted(path.name for path in checkpoints.iterdir()) == ["step=8.ckpt"]  # the end waited for it


def test_a_rule_that_says_sync_is_committed_before_training_goes_on(tmp_path: Path) -> None:
    rule = resilient.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, filename="{step}", async_save=False)
    committed_before_next_batch = []
    with resilient.Run(checkpoint=[rule], run_dir=tmp_path) as run:
        run.track(model=torch.nn.Linear(4, 4))
        for _ in run.batches(range(3)):
            committed_before_next_batch.append([event["step"] for event in _events(tmp_path, "checkpoint")])
    assert committed_before_next_batch == [[], [1], [1, 2]]
    assert not any(thread.name == "resilient-checkpoint-writer" for thread in threading.enumerate())


def test_a_state_a_copy_cannot_reproduce_is_saved_synchronously_with_one_warning(tmp_path: Path) -> None:
    class SparseState:
        def state_dict(self) -> dict[str, torch.Tensor]:
            return {"table": torch.eye(3).to_sparse()}

        def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
            pass

    rule = resilient.ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, filename="{step}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with resilient.Run(checkpoint=[rule], run_dir=tmp_path) as run:
            run.track(model=torch.nn.Linear(4, 4), table=SparseState())
            for _ in run.batches(range(3)):
                pass
    messages = [str(warning.message) for warning in caught if "asynchronous save" in str(warning.message)]
    assert len(messages) == 1 and "sparse" in messages[0] and "synchronously" in messages[0]
    assert len(_events(tmp_path, "checkpoint")) == 3


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_async_save_must_be_a_bool(tmp_path: Path, value: object) -> None:
    with pytest.raises(TypeError, match="async_save must be True or False"):
        resilient.Run(checkpoint=[], run_dir=tmp_path, async_save=value)


def test_a_rule_s_async_save_is_a_bool_or_none() -> None:
    assert resilient.ModelCheckpoint(async_save=None).async_save is None
    with pytest.raises(TypeError, match="async_save"):
        resilient.ModelCheckpoint(async_save="no")


def _launch(run_dir: Path, world_size: int, *extra: str) -> list[dict[str, object]]:
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), "--run-dir", str(run_dir), *extra], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for env in rank_envs(world_size)]
    reports = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert stdout.strip(), stderr
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return sorted(reports, key=lambda report: report["rank"])


@pytest.mark.parametrize("world_size", [1, 2])
def test_a_background_failure_stops_every_rank_at_the_same_boundary_naming_the_cause(
    tmp_path: Path, world_size: int
) -> None:
    """Seen by rank 0 at the boundary after the failure; with two ranks, agreed one step later, and
    in either case before the next save is due (step 6)."""
    reports = _launch(tmp_path, world_size, "--fail-at-step", "3", "--every", "3")
    expected_step = 4 if world_size == 1 else 5
    assert [report["step"] for report in reports] == [expected_step] * world_size
    assert reports[0]["error"] == "CheckpointWriteError" and "File too large" in str(reports[0]["message"])
    for report in reports[1:]:
        assert report["error"] == "CheckpointError"
        assert "rank 0 could not write the checkpoint: CheckpointWriteError" in str(report["message"])
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "failed" and "File too large" in status["message"]
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == []  # nothing torn is left


def test_a_save_due_waits_for_the_one_in_flight_and_so_learns_its_failure(tmp_path: Path) -> None:
    reports = _launch(tmp_path, 2, "--fail-at-step", "3")  # a save at every step: the next is due at 4
    assert [report["step"] for report in reports] == [4, 4]
    names = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert names == ["step=1.ckpt", "step=2.ckpt"]
    for name in names:
        resilient.load_checkpoint(tmp_path / "checkpoints" / name)


def test_with_on_save_error_continue_every_rank_trains_on_and_the_failed_save_is_forgotten(tmp_path: Path) -> None:
    reports = _launch(tmp_path, 2, "--fail-at-step", "3", "--on-save-error", "continue", "--steps", "6")
    assert [report.get("finished_at") for report in reports] == [6, 6]
    assert [event["step"] for event in _events(tmp_path, "checkpoint_failed")] == [3]
    assert [event["step"] for event in _events(tmp_path, "checkpoint")] == [1, 2, 4, 5, 6]
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == [
        f"step={step}.ckpt" for step in (1, 2, 4, 5, 6)]


def test_close_waits_for_the_save_in_flight(tmp_path: Path) -> None:
    """A run used without `with`: `close()` is its end, and must not leave a write behind."""
    rule = resilient.ModelCheckpoint(every_n_train_steps=3, filename="{step}")
    run = resilient.Run(checkpoint=[rule], run_dir=tmp_path)
    run.track(model=torch.nn.Linear(256, 256))
    for _ in run.batches(range(3)):
        pass
    run.close()
    assert [event["step"] for event in _events(tmp_path, "checkpoint")] == [3]  # committed before close returned
    for thread in threading.enumerate():  # and the writer ends (it signals its end just before it returns)
        if thread.name == "resilient-checkpoint-writer":
            thread.join(timeout=60)
            assert not thread.is_alive()
    resilient.load_checkpoint(tmp_path / "checkpoints" / "step=3.ckpt")
