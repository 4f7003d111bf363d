"""Elastic requeue on the real cluster: a job that asks for 1 to 2 nodes starts on both, is
preempted, and comes back on the one node left; it resumes its 2-rank FSDP2 checkpoint on 1 rank.

What a resume on another world size promises (tests/loop/test_sharded.py): the parameters and
the optimizer state restored equal those saved, exactly, and every sample of an epoch is seen
once; training then goes on with one rank's batches, so the final weights are no uninterrupted
run's and are not compared with one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

import resilient

from ._flows import come_back, gate_dir, wait_ready, wait_requeued
from .conftest import SlurmCluster

REPO = Path(__file__).resolve().parents[2]
GATE_STEP = 4  # of 12 (2 epochs of 6 steps on 2 ranks)


def _scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def n2_back_afterwards(slurm_cluster: SlurmCluster) -> Iterator[None]:
    """The test takes n2 out of service; whatever happens, it is back for the next test."""
    try:
        yield
    finally:
        _scontrol("update", "nodename=n2", "state=resume")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilient", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def _leaves(state: object, path: str = "") -> dict[str, object]:
    """Every tensor and value in a nested state dict, by its path in it."""
    if isinstance(state, dict):
        return {key: value for name in state for key, value in _leaves(state[name], f"{path}/{name}").items()}
    if isinstance(state, list):
        return {key: value for i, item in enumerate(state) for key, value in _leaves(item, f"{path}/{i}").items()}
    return {path: state}


def _assert_same_state(restored: object, saved: object) -> None:
    mine, theirs = _leaves(restored), _leaves(saved)
    assert mine.keys() == theirs.keys()
    for path, value in mine.items():
        same = torch.equal(value, theirs[path]) if isinstance(value, torch.Tensor) else value == theirs[path]
        assert same, f"{path}: restored {value!r:.80} != saved {theirs[path]!r:.80}"


def _samples_by_epoch(dumps: Path) -> dict[int, list[int]]:
    seen: dict[int, list[int]] = {}
    for path in dumps.glob("samples-rank*.txt"):
        for line in path.read_text().splitlines():
            epoch, *indices = map(int, line.split())
            seen.setdefault(epoch, []).extend(indices)
    return seen


def test_two_nodes_preempted_come_back_on_one_and_resume_the_sharded_state(
        slurm_cluster: SlurmCluster, tmp_path: Path, n2_back_afterwards: None) -> None:
    gate, dumps, run_dir = gate_dir(tmp_path), tmp_path / "dumps", tmp_path / "run"
    dumps.mkdir()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump({
        "name": "elastic",
        "entrypoint": "tests.submission.jobs:train_sharded",
        "args": {"dump_dir": str(dumps), "gate_steps": [GATE_STEP], "gate_dir": str(gate)},
        "executor": "slurm",
        "run_dir": str(run_dir),
        "resources": {"nodes": "1-2", "time": 10},
        "slurm": {"partition": "low"},
        "checkpoint": {"every_n_train_steps": 2, "filename": "{step}"},
        "async_save": False,  # the job's dumps gather the state while a background save could
    }))
    submitted = _cli("submit", str(job_file))
    assert submitted.returncode == 0, submitted.stderr
    handle = resilient.JobHandle.attach(run_dir)
    job_id = int(handle.job_id)

    wait_ready(slurm_cluster, handle, gate, GATE_STEP)
    assert slurm_cluster.job(job_id)["NodeList"] in ("n[1-2]", "n1,n2")  # the most of the range, while free
    assert handle.status.world_sizes == [2]
    slurm_cluster.preempt(nodes=2)
    wait_requeued(slurm_cluster, job_id)
    _scontrol("update", "nodename=n2", "state=drain", "reason=elastic-test")  # only n1 is left

    result = come_back(slurm_cluster, handle)
    job = slurm_cluster.job(job_id)
    assert (job["NodeList"], job["Restarts"]) == ("n1", "1")
    status = handle.status
    assert status.state == "completed" and status.requeues == {"preempted": 1}, status
    assert status.world_sizes == [2, 1]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["world_size"] for e in events if e["event"] == "started"] == [2, 1]
    [resumed] = [e for e in events if e["event"] == "resumed"]
    assert (resumed["saved_world_size"], resumed["world_size"]) == (2, 1)
    shown = _cli("status", str(run_dir))
    assert shown.returncode == 0 and "world size at each start: 2, 1" in shown.stdout, shown.stdout + shown.stderr

    # What 2 ranks held after the step the emergency checkpoint saved is what 1 rank restored.
    saved = torch.load(dumps / f"step-{resumed['step']}-ranks2.pt")
    _assert_same_state(torch.load(dumps / "restored-ranks1.pt"), saved)
    assert GATE_STEP < resumed["step"] <= 6  # in epoch 0: the stop came at the gate, a step or two later
    # One rank deals itself the rest of epoch 0 (16 samples a step were taken on 2 ranks), then all of epoch 1.
    assert result == {"step": resumed["step"] + (96 - 16 * resumed["step"]) // 8 + 12, "world_size": 1}
    seen = _samples_by_epoch(dumps)
    assert sorted(seen) == [0, 1] and all(sorted(indices) == list(range(96)) for indices in seen.values())
