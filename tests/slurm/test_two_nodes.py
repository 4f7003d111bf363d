"""A 2-node, 2-rank gloo job on the real cluster, warned on one rank only: both ranks agree on
one step, checkpoint it, requeue, and finish with the weights of an uninterrupted 2-rank run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from tests.loop._jobs import assert_bitwise_equal
from tests.submission.jobs import make_job

from ._flows import come_back, emergency_steps, gate_dir, wait_ready
from .conftest import SlurmCluster

GATE_STEP = 10


def _task_of_rank(job_id: str, rank: int) -> psutil.Process:
    """The process SLURM started as `rank` of the job (both "nodes" live on this machine)."""
    for process in psutil.process_iter():
        try:
            env = process.environ()
        except psutil.Error:
            continue
        if env.get("SLURM_JOB_ID") == job_id and env.get("SLURM_PROCID") == str(rank) and "SLURM_STEP_ID" in env:
            if "submitit" in " ".join(process.cmdline()):
                return process
    raise AssertionError(f"no task of rank {rank} in job {job_id}")


def test_signal_to_one_rank_of_two_nodes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    reference = make_job(tmp_path / "reference", tasks_per_node=2, timeout_min=5)
    reference.submit(out=str(tmp_path / "reference.pt")).result(timeout=300)

    gate = gate_dir(tmp_path)
    job = make_job(tmp_path / "run", executor="slurm", partition="low", nodes=2, tasks_per_node=1, timeout_min=10)
    handle = job.submit(out=str(tmp_path / "out.pt"), gate_steps=(GATE_STEP,), gate_dir=str(gate))
    wait_ready(slurm_cluster, handle, gate, GATE_STEP)
    nodes = slurm_cluster.job(int(handle.job_id))["NodeList"]
    assert nodes in ("n[1-2]", "n1,n2"), nodes
    os.kill(_task_of_rank(handle.job_id, 1).pid, signal.SIGUSR2)

    assert come_back(slurm_cluster, handle) == {"step": 24, "world_size": 2}
    status = handle.status
    assert status.state == "completed" and status.requeues == {"preempted": 1}, status
    assert emergency_steps(tmp_path / "run") == [GATE_STEP + 2]  # agreed one step after rank 1 saw it
    assert_bitwise_equal(tmp_path / "reference.pt", tmp_path / "out.pt")
