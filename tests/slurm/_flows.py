"""Steps the SLURM tests share: a gated job, waiting for its requeue, letting it come back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import resilient

from .conftest import FINAL_STATES, SlurmCluster

REQUEUE_WAIT_S = 120


def gate_dir(tmp_path: Path) -> Path:
    gate = tmp_path / "gate"
    gate.mkdir()
    return gate


def wait_ready(cluster: SlurmCluster, handle: resilient.JobHandle, gate: Path, step: int) -> None:
    """Until the job holds at its gate at `step` (it has started training and checkpointed)."""
    cluster.wait_until(lambda: (gate / f"ready-{step}").exists(), 180, f"job {handle.job_id} to reach step {step}")


def wait_requeued(cluster: SlurmCluster, job_id: int, restarts: int = 1) -> None:
    """Until the job has been requeued `restarts` times and is pending (in SLURM's requeue hold)."""

    def requeued() -> bool:
        job = cluster.job(job_id)
        if job["JobState"] in FINAL_STATES:
            raise AssertionError(f"job {job_id} ended {job['JobState']} instead of being requeued")
        return int(job.get("Restarts", "0")) >= restarts and job["JobState"] == "PENDING"

    cluster.wait_until(requeued, REQUEUE_WAIT_S, f"job {job_id} to be requeued")


def release_requeued(cluster: SlurmCluster, job_id: int, restarts: int = 1) -> None:
    """Wait until the job has been requeued `restarts` times and is pending, then lift SLURM's
    2-minute requeue hold (Reason=BeginTime), repeating the release until the job has started.

    The hold exists because the requeue revokes the job's credentials by timestamp, with
    one-second resolution: a job released in the same second as its requeue starts with a
    revoked credential and FAILS ("Job credential revoked", in slurmctld.log). So the release
    waits until the clock is 2 s past the requeue (SubmitTime is set to the requeue time).
    """

    def released() -> bool:
        job = cluster.job(job_id)
        if job["JobState"] != "PENDING":
            return True
        requeued_at = time.mktime(time.strptime(job["SubmitTime"], "%Y-%m-%dT%H:%M:%S"))
        if job.get("Reason") == "BeginTime" and time.time() >= requeued_at + 2:
            cluster.release(job_id)
        return False

    wait_requeued(cluster, job_id, restarts)
    cluster.wait_until(released, 60, f"job {job_id}'s requeue hold to be lifted")


def preempt_at_gates(cluster: SlurmCluster, handle: resilient.JobHandle, gate: Path, steps: list[int]) -> None:
    """Preempt the gated job at each of `steps` in turn, letting it come back after each."""
    for restarts, step in enumerate(steps, start=1):
        wait_ready(cluster, handle, gate, step)
        cluster.preempt(nodes=2)
        release_requeued(cluster, int(handle.job_id), restarts=restarts)


def come_back(cluster: SlurmCluster, handle: resilient.JobHandle, timeout: float = 300) -> Any:
    """Let the requeued job come back at once; return its result."""
    release_requeued(cluster, int(handle.job_id))
    return handle.result(timeout=timeout)


def emergency_steps(run_dir: Path) -> list[int]:
    found = (run_dir / "checkpoints" / "emergency").glob("step=*.ckpt")
    return sorted(resilient.load_checkpoint(path)["resilient"]["step"] for path in found)
