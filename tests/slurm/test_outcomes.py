"""How a SLURM job ends when it should not simply come back: the user cancels it, it raises,
or it is preempted more often than its bound allows."""

from __future__ import annotations

from pathlib import Path

import pytest

import resilient
from tests.submission.jobs import make_job

from ._flows import come_back, emergency_steps, gate_dir, release_requeued, wait_ready
from .conftest import SlurmCluster


def test_scancel_checkpoints_and_does_not_requeue(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    gate = gate_dir(tmp_path)
    handle = make_job(tmp_path / "run", executor="slurm", partition="low", timeout_min=10).submit(
        out=str(tmp_path / "out.pt"), gate_steps=(10,), gate_dir=str(gate))
    wait_ready(slurm_cluster, handle, gate, 10)
    slurm_cluster.cancel(int(handle.job_id))

    with pytest.raises(resilient.JobError, match="cancelled"):
        handle.result(timeout=120)
    assert handle.status.state == "cancelled" and handle.status.requeues == {}
    assert emergency_steps(tmp_path / "run") == [11]
    assert slurm_cluster.state(int(handle.job_id)) == "CANCELLED"


def test_exception_is_not_requeued_by_default(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    handle = make_job(tmp_path, executor="slurm", partition="low", timeout_min=10).submit(
        out=str(tmp_path / "out.pt"), fail_at_step=6)
    with pytest.raises(resilient.JobError, match="boom at step 6"):
        handle.result(timeout=120)
    assert handle.status.state == "failed" and handle.status.requeues == {}


def test_exception_is_retried_once_with_a_crash_bound_of_one(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    handle = make_job(tmp_path, executor="slurm", partition="low", timeout_min=10, max_crash_requeues=1).submit(
        out=str(tmp_path / "out.pt"), fail_at_step=6)
    with pytest.raises(resilient.JobError, match="gave up after 1 requeue"):
        come_back(slurm_cluster, handle)
    assert handle.status.requeues == {"crashed": 1}


def test_preempted_more_often_than_its_bound_gives_up(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    gate = gate_dir(tmp_path)
    job = make_job(tmp_path / "run", executor="slurm", partition="low", timeout_min=10, max_requeues=1)
    handle = job.submit(out=str(tmp_path / "out.pt"), gate_steps=(10, 20), gate_dir=str(gate))
    wait_ready(slurm_cluster, handle, gate, 10)
    slurm_cluster.preempt(nodes=2)
    release_requeued(slurm_cluster, int(handle.job_id))
    wait_ready(slurm_cluster, handle, gate, 20)  # resumed from step 11, held again
    slurm_cluster.preempt(nodes=2)

    with pytest.raises(resilient.JobError, match="gave up after 1 requeue"):
        handle.result(timeout=240)
    status = handle.status
    assert status.state == "gave_up" and status.requeues == {"preempted": 1}, status
    assert emergency_steps(tmp_path / "run")[-1] == 21  # the second stop was checkpointed too
