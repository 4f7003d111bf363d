"""`resilient` commands on the real cluster: the dry run is a batch script sbatch accepts, a job
preempted twice is told truly by `resilient status` and events.jsonl, and `cancel` stops a job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

import resilient
from resilient.rundir._events import read_events
from tests.loop._jobs import assert_bitwise_equal
from tests.submission.jobs import make_job

from ._flows import (
    emergency_steps,
    gate_dir,
    preempt_at_gates,
    wait_ready,
    wait_requeued,
)
from .conftest import SlurmCluster

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilient", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def _submit_gated(tmp_path: Path, gate: Path, gate_steps: list[int]) -> resilient.JobHandle:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump({
        "name": "gated",
        "entrypoint": "tests.submission.jobs:train_model",
        "args": {"out": str(tmp_path / "out.pt"), "gate_steps": gate_steps, "gate_dir": str(gate)},
        "executor": "slurm",
        "run_dir": str(tmp_path / "run"),
        "resources": {"time": 10},
        "slurm": {"partition": "low"},
    }))
    submitted = _cli("submit", str(job_file))
    assert submitted.returncode == 0, submitted.stderr
    return resilient.JobHandle.attach(tmp_path / "run")


def test_dry_run_is_a_batch_script_sbatch_accepts(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    dry = _cli("submit", "examples/slurm/job.yaml", "--dry-run", "-o", f"run_dir={tmp_path / 'run'}")
    assert dry.returncode == 0, dry.stderr
    script = tmp_path / "job.sbatch"
    script.write_text(dry.stdout)
    checked = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stderr
    assert "to start at" in checked.stderr  # sbatch's "Job ... to start at ... using N processors"
    assert not (tmp_path / "run").exists()  # nothing was submitted or created


def test_status_and_events_tell_the_story_of_two_preemptions(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    make_job(tmp_path / "reference")(out=str(tmp_path / "reference.pt"))
    gate = gate_dir(tmp_path)
    handle = _submit_gated(tmp_path, gate, [10, 20])
    preempt_at_gates(slurm_cluster, handle, gate, list((10, 20)))
    assert handle.wait(timeout=300) == "completed"

    status = _cli("status", str(tmp_path / "run"))
    assert status.returncode == 0, status.stderr
    header, row = status.stdout.splitlines()[:2]
    assert header.split()[:5] == ["RUN", "JOB", "EXECUTOR", "STATE", "RESTARTS"]
    assert row.split()[1:4] == [handle.job_id, "slurm", "completed"] and "2 (preempted 2)" in row, row

    events = read_events(tmp_path / "run")
    story = [event["event"] for event in events if event["event"] not in ("checkpoint", "first_step")]
    assert story == ["submitted", "started", "signal", "requeued", "started", "resumed",
                     "signal", "requeued", "started", "resumed", "finished"], story
    assert [event["cause"] for event in events if event["event"] == "requeued"] == ["preempted", "preempted"]
    assert {event["job_id"] for event in events} == {handle.job_id}
    # Each stop committed its emergency checkpoint before the requeue, and the next start resumed
    # exactly there: no completed step was lost.
    stops = [i for i, event in enumerate(events) if event["event"] == "checkpoint" and event["rule"]["kind"] == "emergency"]
    assert [events[i]["step"] for i in stops] == [11, 21]
    assert [events[i + 1]["event"] for i in stops] == ["requeued", "requeued"]
    assert [event["step"] for event in events if event["event"] == "resumed"] == [11, 21]
    assert emergency_steps(tmp_path / "run")[-1] == 21
    assert events[-1]["step"] == 48
    assert_bitwise_equal(tmp_path / "reference.pt", tmp_path / "out.pt")


def test_cancel_stops_the_job_after_its_checkpoint(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    gate = gate_dir(tmp_path)
    handle = _submit_gated(tmp_path, gate, [10])
    wait_ready(slurm_cluster, handle, gate, 10)
    cancelled = _cli("cancel", str(tmp_path / "run"))
    assert cancelled.returncode == 0, cancelled.stderr
    assert handle.wait(timeout=120) == "cancelled"
    assert emergency_steps(tmp_path / "run") == [11]
    names = [event["event"] for event in read_events(tmp_path / "run")]
    assert names[-1] == "cancelled" and "requeued" not in names and "cancel_requested" in names
    again = _cli("preempt", str(tmp_path / "run"))
    assert again.returncode == 2 and "not running" in again.stderr


def test_cancel_of_a_job_held_after_its_requeue_ends_it_as_cancelled(slurm_cluster: SlurmCluster,
                                                                     tmp_path: Path) -> None:
    """Nothing runs in SLURM's requeue hold to say how the job ended: cancel itself records it."""
    gate = gate_dir(tmp_path)
    handle = _submit_gated(tmp_path, gate, [10])
    wait_ready(slurm_cluster, handle, gate, 10)
    slurm_cluster.preempt(nodes=2)
    wait_requeued(slurm_cluster, int(handle.job_id))
    cancelled = _cli("cancel", str(tmp_path / "run"))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "it was waiting to start, so nothing ran; its checkpoints stay" in cancelled.stderr
    assert handle.wait(timeout=120) == "cancelled"
    names = [event["event"] for event in read_events(tmp_path / "run")]
    assert names[-3:] == ["requeued", "cancel_requested", "cancelled"]
    assert emergency_steps(tmp_path / "run") == [11]  # the preemption's checkpoint stays
    row = _cli("status", str(tmp_path / "run")).stdout.splitlines()[1]
    assert row.split()[3] == "cancelled", row
