"""A sweep on the real cluster: one job array whose tasks requeue alone.

Three tasks of the same training (`train_job_task`, the same weights whatever the task's name):
`task=a` is preempted twice by `resilient preempt` on its own directory, `task=b` runs into its
time limit while it holds at step 10, `task=c` is left alone. Only a and b requeue (each
by `scontrol requeue ARRAYID_TASKID`), each resumes bitwise, and `resilient status` on the sweep
tells each task's state and restarts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import resilient
from resilient.rundir import read_events, read_sweep
from tests.loop._jobs import assert_bitwise_equal
from tests.submission.jobs import make_job

from ._flows import release_requeued
from .conftest import SlurmCluster

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilient", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.timeout(600)
def test_array_tasks_requeue_alone_and_resume_bitwise(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    make_job(tmp_path / "reference")(out=str(tmp_path / "reference.pt"))
    gates, out, sweep_dir = tmp_path / "gates", tmp_path / "out", tmp_path / "sweep"
    out.mkdir()
    job_file = tmp_path / "sweep.yaml"
    job_file.write_text(yaml.safe_dump({
        "name": "sweep",
        "entrypoint": "tests.submission.jobs:train_job_task",
        "args": {"out_dir": str(out), "gates": str(gates)},
        "executor": "slurm",
        "run_dir": str(sweep_dir),
        # b holds at step 10 until the warning, 20 s before its 2 minutes end. A warning signal in
        # the last 80 s (the delay and SLURM's up to 60 s early warnings) reads as the time limit's:
        # a's fire drills come well before that, in the first seconds of each start.
        "resources": {"time": 2},
        "slurm": {"partition": "low", "signal_delay": 20},
        "sweep": {"args.task": ["a", "b", "c"]},
    }))
    submitted = _cli("submit", job_file)
    assert submitted.returncode == 0, submitted.stderr
    sweep = read_sweep(sweep_dir)
    assert sweep is not None and [task.name for task in sweep.tasks] == ["task=a", "task=b", "task=c"]
    handles = {task.name[-1]: resilient.JobHandle.attach(task.run_dir) for task in sweep.tasks}
    assert [handle.job_id for handle in handles.values()] == [f"{sweep.job_id}_{index}" for index in range(3)]
    # Two nodes of one CPU: c waits for a or b to leave, and `squeue --jobs ARRAY_2` finds it waiting.
    assert handles["c"].state == "pending"

    for restarts, step in enumerate((10, 20), start=1):
        slurm_cluster.wait_until(lambda step=step: (gates / "a" / f"ready-{step}").exists(), 180, f"task a at step {step}")
        preempted = _cli("preempt", sweep_dir / "task=a")
        assert preempted.returncode == 0, preempted.stderr
        release_requeued(slurm_cluster, handles["a"].job_id, restarts=restarts)  # type: ignore[arg-type]
    release_requeued(slurm_cluster, handles["b"].job_id)  # type: ignore[arg-type]
    assert {task: handle.wait(timeout=300) for task, handle in handles.items()} == dict.fromkeys("abc", "completed")

    assert {task: handle.status.requeues for task, handle in handles.items()} == {
        "a": {"preempted": 2}, "b": {"time_limit": 1}, "c": {}}
    for task, handle in handles.items():
        events = read_events(handle.run_dir)
        starts = [event for event in events if event["event"] == "started"]
        assert len(starts) == {"a": 3, "b": 2, "c": 1}[task], events
        assert {event["job_id"] for event in events if "job_id" in event} == {handle.job_id}  # requeued as itself
        assert_bitwise_equal(tmp_path / "reference.pt", out / f"{task}.pt")

    logs = {task: _cli("logs", sweep_dir / f"task={task}") for task in "ac"}  # in the array's shared folder
    assert logs["a"].returncode == 0 and logs["a"].stderr.count("resilient: requeued") == 2, logs["a"].stderr
    assert logs["c"].returncode == 0 and "requeued" not in logs["c"].stderr, logs["c"].stderr
    status = _cli("status", sweep_dir)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:4]}
    assert "completed  2 (preempted 2)" in rows["task=a"], status.stdout
    assert "completed  1 (time_limit 1)" in rows["task=b"], status.stdout
    assert "completed  0 " in rows["task=c"], status.stdout
    assert status.stdout.rstrip().endswith("3 tasks: 3 completed"), status.stdout

    report = _cli("report", sweep_dir, "--json")
    assert report.returncode == 0, report.stderr
    tasks = {task["task"][-1]: task for task in json.loads(report.stdout)["tasks"]}
    for task, breakdown in tasks.items():
        parts = sum(part["seconds"] for part in breakdown["parts"].values())
        assert parts == pytest.approx(breakdown["wall_seconds"], rel=0.01), breakdown
        assert [each["steps_lost"] for each in breakdown["interruptions"]] == {"a": [0, 0], "b": [0], "c": []}[task]
    drawn = _cli("report", sweep_dir, "--png", tmp_path / "sweep.png")
    assert drawn.returncode == 0, drawn.stderr
    from matplotlib.image import imread  # the report extra, which the test extra installs

    height, width, _ = imread(tmp_path / "sweep.png").shape
    assert (width, height) == (1000, 295)  # 10 x (1.6 + 0.45 per row) inches at 100 dpi: three rows, a task each


def test_an_array_sbatch_refuses_leaves_nothing_behind(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job_file, sweep_dir = tmp_path / "sweep.yaml", tmp_path / "sweep"
    job_file.write_text(yaml.safe_dump({
        "entrypoint": "tests.submission.jobs:train_job_task", "args": {"out_dir": str(tmp_path)},
        "executor": "slurm", "run_dir": str(sweep_dir), "slurm": {"partition": "nosuch"},
        "sweep": {"args.task": ["a", "b"]},
    }))
    refused = _cli("submit", job_file)
    assert refused.returncode == 2, refused.stderr
    # (sbatch's own lines come first: submitit lets its stderr through, for one job as for an array)
    assert refused.stderr.splitlines()[-1].startswith("resilient: error: the slurm submission of the sweep failed: ")
    assert not sweep_dir.exists()
