"""The examples do what their docstrings say when a newcomer runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import resilient

REPO = Path(__file__).resolve().parents[1]


def _plain_script(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "examples" / "plain_script.py"), "--run-dir", str(run_dir), *args],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=240)


def _committed_steps(run_dir: Path) -> list[int]:
    return [resilient.load_checkpoint(path)["resilient"]["step"] for path in run_dir.glob("checkpoints/*.ckpt")]


def test_plain_script_crashes_once_says_how_to_resume_and_resumes_even_with_the_same_command(tmp_path: Path) -> None:
    crashed = _plain_script(tmp_path, "--stop-at", "23")
    assert crashed.returncode == -signal.SIGKILL
    assert "run `python examples/plain_script.py` to resume" in crashed.stdout
    newest = max(_committed_steps(tmp_path))  # step 20's, unless the kill caught it being written
    assert newest in (14, 20)
    again = _plain_script(tmp_path, "--stop-at", "23")  # pasted again by a tired user: it resumes
    assert again.returncode == 0, again.stderr
    assert f"at epoch 1, step {newest}" in again.stdout
