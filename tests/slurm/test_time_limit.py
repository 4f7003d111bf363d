"""Time limits on a real SLURM cluster: the job requeues itself before it is killed, with the
warning signal and, on a cluster that sends none, by knowing its own end time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.loop._jobs import REPO, SCRIPT, assert_bitwise_equal
from tests.submission.jobs import make_job

from ._flows import come_back, emergency_steps, gate_dir, release_requeued
from .conftest import SlurmCluster


def test_time_limit_warning_signal_requeues_and_resumes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    make_job(tmp_path / "reference")(out=str(tmp_path / "reference.pt"))
    gate = gate_dir(tmp_path)
    # The job holds at step 10 until SLURM's warning (20 s before the 1-minute limit, or up to
    # ~30 s earlier) arrives; the resumed run starts after step 10 and finishes at once.
    job = make_job(tmp_path / "run", executor="slurm", partition="low", timeout_min=1, signal_delay_s=20)
    handle = job.submit(out=str(tmp_path / "out.pt"), gate_steps=(10,), gate_dir=str(gate))

    assert come_back(slurm_cluster, handle) == {"step": 48, "world_size": 1}
    status = handle.status
    assert status.state == "completed" and status.requeues == {"time_limit": 1}, status
    assert emergency_steps(tmp_path / "run") == [11]
    assert_bitwise_equal(tmp_path / "reference.pt", tmp_path / "out.pt")


def test_time_limit_without_warning_signal_is_met_by_deadline_awareness(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A plain `python train.py` under sbatch with no --signal: the job reads its end time from
    SLURM, stops in time, requeues itself and finishes after the requeue."""
    reference = tmp_path / "reference.pt"
    subprocess.run([sys.executable, str(SCRIPT), "--run-dir", str(tmp_path / "reference"), "--out", str(reference)],
                   check=True, cwd=REPO, capture_output=True)
    out, run_dir = tmp_path / "out.pt", tmp_path / "run"
    command = f"{sys.executable} {SCRIPT} --run-dir {run_dir} --out {out} --step-seconds 1.0"
    job_id = slurm_cluster.sbatch(f"cd {REPO}\nexec {command}\n", "--partition=low", "--time=1", "--requeue", "--open-mode=append",
                                  f"--output={tmp_path}/slurm-%j.out", workdir=tmp_path)

    release_requeued(slurm_cluster, job_id)  # 48 one-second steps cannot fit in one minute
    slurm_cluster.wait_for(job_id, "COMPLETED", 150)

    status = (run_dir / "status.json").read_text()
    assert '"completed"' in status and '"time_limit": 1' in status, status
    assert len(emergency_steps(run_dir)) == 1
    assert_bitwise_equal(reference, out)
