"""Kill-and-resume: SIGKILL a real training process at random steps, restart it each time, and
require the final weights to be bitwise equal to a run that was never interrupted."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "train.py"
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(run_dir: Path, out: Path, world_size: int, kill_at: int | None) -> list[subprocess.Popen[str]]:
    port = _free_port()
    procs = []
    for rank in range(world_size):
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        if world_size > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [sys.executable, str(SCRIPT), "--run-dir", str(run_dir), "--out", str(out)]
        if kill_at is not None and rank == 0:
            command += ["--kill-at-step", str(kill_at)]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _run_to_end(run_dir: Path, out: Path, world_size: int, kill_at: int | None = None) -> str:
    """Run the job once; with `kill_at`, rank 0 kills itself and the other ranks are killed after it."""
    procs = _launch(run_dir, out, world_size, kill_at)
    if kill_at is None:
        outputs = [proc.communicate(timeout=240) for proc in procs]
        for proc, (stdout, stderr) in zip(procs, outputs):
            assert proc.returncode == 0, stderr
        return outputs[0][0]
    procs[0].wait(timeout=240)
    assert procs[0].returncode == -signal.SIGKILL, procs[0].communicate()[1]
    for proc in procs[1:]:  # a peer of a dead rank is stuck in a collective or fails; kill it like SLURM would
        proc.kill()
    for proc in procs:
        proc.communicate()
    return ""


def _assert_bitwise_equal(a: Path, b: Path) -> None:
    left, right = torch.load(a), torch.load(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), f"{name} differs"


@pytest.mark.parametrize("world_size, total_steps", [(1, 48), (2, 24)])
def test_killed_at_random_steps_resumes_bitwise(tmp_path: Path, world_size: int, total_steps: int) -> None:
    reference = tmp_path / "reference.pt"
    _run_to_end(tmp_path / "reference-run", reference, world_size)

    kills = sorted(random.Random(world_size).sample(range(1, total_steps), 3))
    run_dir, out = tmp_path / "interrupted-run", tmp_path / "interrupted.pt"
    for kill_at in kills:
        _run_to_end(run_dir, out, world_size, kill_at=kill_at)
        assert not out.exists()
    report = _run_to_end(run_dir, out, world_size)

    assert f'"step": {total_steps}' in report
    assert '"resumed_from": null' not in report
    _assert_bitwise_equal(reference, out)
