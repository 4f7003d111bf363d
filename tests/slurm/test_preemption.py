"""Preemption on a real SLURM cluster: the job checkpoints at the agreed step, is requeued,
resumes, and ends with the weights of a run that was never preempted."""

from __future__ import annotations

from pathlib import Path

import pytest

import resilient
from tests.loop._jobs import assert_bitwise_equal
from tests.requeue._notifiers import recorder, records
from tests.submission.jobs import make_job

from ._flows import come_back, emergency_steps, gate_dir, wait_ready
from .conftest import SlurmCluster

GATE_STEP = 10


def _preempted_once(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    make_job(tmp_path / "reference")(out=str(tmp_path / "reference.pt"))
    gate = gate_dir(tmp_path)
    told = tmp_path / "told.jsonl"
    job = make_job(tmp_path / "run", executor="slurm", partition="low", timeout_min=10,
                   notify=resilient.Notify(command=recorder(told)))
    handle = job.submit(out=str(tmp_path / "out.pt"), gate_steps=(GATE_STEP,), gate_dir=str(gate))
    wait_ready(slurm_cluster, handle, gate, GATE_STEP)
    slurm_cluster.preempt(nodes=2)

    assert come_back(slurm_cluster, handle) == {"step": 48, "world_size": 1}
    status = handle.status
    assert status.state == "completed" and status.requeues == {"preempted": 1}, status
    # The signal came while step 11 ran: that step completed and was saved before the job left.
    assert emergency_steps(tmp_path / "run") == [GATE_STEP + 1]
    assert_bitwise_equal(tmp_path / "reference.pt", tmp_path / "out.pt")
    # Told of the requeue within the grace time, before `scontrol requeue` killed the job, and of the end.
    assert [(record["RESILIENT_STATE"], record["status_state"], record["RESILIENT_JOB_ID"]) for record in records(told)
            ] == [("requeued", "requeued", str(handle.job_id)), ("completed", "completed", str(handle.job_id))]


def test_preempted_with_the_warning_signal(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    _preempted_once(slurm_cluster, tmp_path)


@pytest.mark.parametrize("mode, signal", [("requeue", "term"), ("cancel", "user")])
def test_preempted_on_other_cluster_settings(slurm_cluster: SlurmCluster, tmp_path: Path, mode: str, signal: str) -> None:
    """SIGTERM-only preemption (no preempt_send_user_signal), and PreemptMode=CANCEL, where the
    job must requeue itself within the grace time."""
    with slurm_cluster.reconfigure(preempt_mode=mode, preempt_signal=signal):
        _preempted_once(slurm_cluster, tmp_path)
