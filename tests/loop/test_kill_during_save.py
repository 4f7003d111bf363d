"""A process killed while writing a large checkpoint leaves nothing that loads as valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import resilient

SCRIPT = Path(__file__).parent / "scripts" / "big_save.py"
REPO = Path(__file__).resolve().parents[2]


def _job(run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), "--run-dir", str(run_dir), *extra],
                          env=env, capture_output=True, text=True, timeout=240)


def test_kill_during_large_save_never_loads_a_partial_checkpoint(tmp_path: Path) -> None:
    killed = _job(tmp_path, "--kill-in-save-of-step", "3", "--sync")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = tmp_path / "checkpoints"
    assert any(".tmp-" in p.name for p in checkpoints.iterdir())  # the kill did land mid-write
    assert not (checkpoints / "step=3.ckpt").exists()

    finished = _job(tmp_path, "--sync")
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["resumed_from"].endswith("step=2.ckpt")
    assert report["restored_value"] == 2.0  # the state of the committed step-2 checkpoint, not a torn one
    assert report["step"] == 4
    assert not any(".tmp-" in p.name for p in checkpoints.iterdir())  # the crash's leftovers are gone
    assert resilient.load_checkpoint(checkpoints / "step=4.ckpt")["resilient"]["step"] == 4


def test_kill_during_a_background_save_resumes_from_the_newest_committed_checkpoint(tmp_path: Path) -> None:
    """Training went on while the save was written: the kill finds a write in flight, and the
    restart resumes from the newest checkpoint committed before it, whole, never the torn one."""
    killed = _job(tmp_path, "--kill-in-save-of-step", "3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = tmp_path / "checkpoints"
    torn = [p.name for p in checkpoints.iterdir() if ".tmp-" in p.name]
    assert torn  # the kill did land mid-write
    committed = sorted(_step_of(p) for p in checkpoints.glob("*.ckpt"))
    assert committed and committed == list(range(1, committed[-1] + 1)) and committed[-1] < 3

    finished = _job(tmp_path)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert _step_of(report["resumed_from"]) == committed[-1]
    assert report["restored_value"] == committed[-1]  # each step adds 1 to the state: that checkpoint's state
    assert report["step"] == 4
    assert not any(".tmp-" in p.name for p in checkpoints.iterdir())  # the crash's leftovers are gone
    assert resilient.load_checkpoint(checkpoints / "step=4.ckpt")["resilient"]["step"] == 4


def test_a_second_ctrl_c_during_a_save_stops_at_once_and_leaves_nothing_that_looks_valid(tmp_path: Path) -> None:
    interrupted = _job(tmp_path, "--interrupt-twice-in-save-of-step", "3")
    assert interrupted.returncode == 130, interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    assert "stopped by Ctrl-C at step 3, without a checkpoint" in interrupted.stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "stopped"
    assert [event["event"] for event in _events(tmp_path)][-1] == "stopped"
    for path in tmp_path.glob("checkpoints/**/*.ckpt"):
        resilient.load_checkpoint(path)  # whatever is visible is whole: a torn save never is

    finished = _job(tmp_path)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["restored_value"] == _step_of(report["resumed_from"])  # each step adds 1 to the state
    assert report["step"] == 4


def _events(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _step_of(checkpoint: str) -> int:
    return resilient.load_checkpoint(checkpoint)["resilient"]["step"]
