"""Launching the training script in tests/loop/scripts/train.py as real processes (1 or more ranks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).parent / "scripts" / "train.py"
REPO = Path(__file__).resolve().parents[2]
FSDP = ("--fsdp", "--epochs", "2")  # the sharded job: 12 steps of 8 samples per rank on 2 ranks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_envs(world_size: int) -> list[dict[str, str]]:
    """The environment of each rank of a torchrun-style job on this machine."""
    port = free_port()
    envs = []
    for rank in range(world_size):
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        if world_size > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        envs.append(env)
    return envs


def launch(
    run_dir: Path, out: Path, world_size: int, kill_at: int | None, extra: tuple[str, ...] = ()
) -> list[subprocess.Popen[str]]:
    procs = []
    for rank, env in enumerate(rank_envs(world_size)):
        command = [sys.executable, str(SCRIPT), "--run-dir", str(run_dir), "--out", str(out)]
        if kill_at is not None and rank == 0:
            command += ["--kill-at-step", str(kill_at)]
        command += list(extra)
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def run_to_end(run_dir: Path, out: Path, world_size: int, kill_at: int | None = None,
               extra: tuple[str, ...] = ()) -> str:
    """Run the job once; with `kill_at`, rank 0 kills itself and the other ranks are killed after it."""
    procs = launch(run_dir, out, world_size, kill_at, extra)
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


def assert_bitwise_equal(a: Path, b: Path) -> None:
    left, right = torch.load(a), torch.load(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), f"{name} differs"
