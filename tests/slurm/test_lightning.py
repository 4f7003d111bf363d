"""A Lightning job submitted with `resilient submit` on the real cluster, preempted twice: it comes
back each time on its own, resumes where it stopped, and `resilient status` tells it truly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

import resilient

from ._flows import gate_dir, preempt_at_gates
from .conftest import SlurmCluster

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilient", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_lightning_job_preempted_twice_completes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    gate = gate_dir(tmp_path)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump({
        "name": "lightning",
        "entrypoint": "examples.lightning_classifier:train",
        "args": {"epochs": 2, "gate_dir": str(gate), "gate_steps": [5, 20]},
        "executor": "slurm",
        "run_dir": str(tmp_path / "run"),
        "resources": {"time": 10},
        "slurm": {"partition": "low"},
        "checkpoint": [],
    }))
    submitted = _cli("submit", str(job_file))
    assert submitted.returncode == 0, submitted.stderr
    handle = resilient.JobHandle.attach(tmp_path / "run")
    preempt_at_gates(slurm_cluster, handle, gate, list((5, 20)))
    assert handle.wait(timeout=300) == "completed"

    status = _cli("status", str(tmp_path / "run"))
    assert status.returncode == 0, status.stderr
    row = status.stdout.splitlines()[1]
    assert "completed" in row and "2 (preempted 2)" in row, status.stdout
    # Each stop committed its checkpoint at the gate's step; the one resumed from is never deleted.
    emergency = sorted(path.name for path in (tmp_path / "run" / "checkpoints" / "emergency").iterdir())
    assert emergency == ["step=20.ckpt", "step=5.ckpt"]
    assert handle.result(timeout=60) == "step 28"
