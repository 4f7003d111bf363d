"""A sweep on the local executor: one job per task, each in its own run directory, told by
`resilient status` as a group, steered as one by `preempt` and `cancel`, resumed by submitting again.

The tasks are `train_job_task`, whose weights do not depend on the task's name: every task
ends with the same weights, which a plain run of the same training gives too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import resilient
from resilient.rundir import read_sweep
from tests.loop._jobs import assert_bitwise_equal
from tests.submission.jobs import make_job

from ._cli import ELSEWHERE, assert_usage_error, cli, events, kill_jobs, story, wait_until


@pytest.fixture(autouse=True)
def _no_job_left(tmp_path: Path) -> Iterator[None]:
    yield
    kill_jobs(tmp_path)


def _sweep_file(tmp_path: Path, gates: bool = False) -> Path:
    (tmp_path / "out").mkdir()
    # Gated tasks hold at steps 10 (b) and 10 and 20 (a): two epochs of 16 steps.
    args = {"out_dir": str(tmp_path / "out"), "epochs": 2 if gates else 1, **({"gates": str(tmp_path / "gates")} if gates else {})}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "sweep", "entrypoint": "tests.submission.jobs:train_job_task", "args": args,
        "run_dir": str(tmp_path / "runs" / "sweep"), "resources": {"time": 5},
        "checkpoint": {"every_n_train_steps": 4, "filename": "{step}"},
        "sweep": {"args.task": ["a", "b"]},
    }))
    return path


def _handles(sweep_dir: Path) -> dict[str, resilient.JobHandle]:
    sweep = read_sweep(sweep_dir)
    assert sweep is not None
    return {task.name: resilient.JobHandle.attach(task.run_dir) for task in sweep.tasks}


def test_a_local_sweep_runs_every_task_in_its_own_directory_and_resumes(tmp_path: Path) -> None:
    job_file, sweep_dir = _sweep_file(tmp_path), tmp_path / "runs" / "sweep"
    dry = cli("submit", job_file, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.splitlines()[1:] == [
        "# TASK  DIRECTORY  OVERRIDES", "# 0     task=a     args.task=a", "# 1     task=b     args.task=b"], dry.stdout
    array = cli("submit", job_file, "--dry-run", "--executor", "slurm", "-o", "sweep.max_parallel=1")
    assert array.returncode == 0 and "#SBATCH --array=0-1%1\n" in array.stdout, array.stderr
    assert array.stdout.splitlines()[-2:] == ["# 0     task=a     args.task=a", "# 1     task=b     args.task=b"]
    assert not sweep_dir.exists()

    submitted = cli("submit", job_file)
    assert submitted.returncode == 0, submitted.stderr
    handles = _handles(sweep_dir)
    assert list(handles) == ["task=a", "task=b"] and len({handle.job_id for handle in handles.values()}) == 2
    assert [handle.wait(timeout=240) for handle in handles.values()] == ["completed", "completed"]
    make_job(tmp_path / "reference")(out=str(tmp_path / "reference.pt"), epochs=1)
    for task in "ab":
        assert_bitwise_equal(tmp_path / "reference.pt", tmp_path / "out" / f"{task}.pt")
        assert (sweep_dir / f"task={task}" / "checkpoints" / "step=16.ckpt").is_dir()

    status = cli("status", sweep_dir)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split()[:4] == ["TASK", "JOB", "EXECUTOR", "STATE"]
    assert [line.split()[:4] for line in lines[1:3]] == [
        ["task=a", handles["task=a"].job_id, "local", "completed"], ["task=b", handles["task=b"].job_id, "local", "completed"]]
    assert lines[-1] == f"sweep {sweep_dir}: 2 tasks: 2 completed"
    everything = cli("status", cwd=tmp_path, env=ELSEWHERE)  # ./runs: the sweep's tasks, one under the other
    assert everything.returncode == 0, everything.stderr
    assert [line.split()[0] for line in everything.stdout.splitlines()[1:3]] == ["runs/sweep/task=a", "runs/sweep/task=b"]
    assert everything.stdout.splitlines()[-1] == "sweep runs/sweep: 2 tasks: 2 completed"
    one = cli("status", sweep_dir / "task=b")  # a task is a run like any other
    assert one.returncode == 0 and one.stdout.splitlines()[1].split()[3] == "completed", one.stdout
    assert_usage_error(cli("logs", sweep_dir), f"is a sweep; name one of its tasks, e.g. {sweep_dir / 'task=a'}")

    again = cli("submit", job_file)  # each task resumes in its own directory: done already, it says so
    assert again.returncode == 0, again.stderr
    resumed = _handles(sweep_dir)
    assert [handle.wait(timeout=240) for handle in resumed.values()] == ["completed", "completed"]
    for name, handle in resumed.items():
        assert handle.job_id != handles[name].job_id
        assert events(handle.run_dir)[-1]["event"] == "finished" and "step" not in events(handle.run_dir)[-1]

    fresh = cli("submit", job_file, "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    aside = Path(fresh.stdout.splitlines()[0].removeprefix("moved the previous sweep to "))
    assert aside.parent == sweep_dir.parent and read_sweep(aside) is not None
    assert [handle.wait(timeout=240) for handle in _handles(sweep_dir).values()] == ["completed", "completed"]
    assert [event["event"] for event in story(sweep_dir / "task=a")][:3] == ["submitted", "started", "finished"]


def test_preempt_and_cancel_take_the_whole_sweep(tmp_path: Path) -> None:
    job_file, sweep_dir, gates = _sweep_file(tmp_path, gates=True), tmp_path / "runs" / "sweep", tmp_path / "gates"
    submitted = cli("submit", job_file)
    assert submitted.returncode == 0, submitted.stderr
    handles = _handles(sweep_dir)
    for task in "ab":
        wait_until((gates / task / "ready-10").exists, f"task {task} at step 10")
    assert_usage_error(cli("submit", job_file), "already has a live local job")

    preempted = cli("preempt", sweep_dir)  # a and b both checkpoint, requeue and come back
    assert preempted.returncode == 0, preempted.stderr
    assert preempted.stderr.count("its preemption signal") == 2
    wait_until((gates / "a" / "ready-20").exists, "task a at step 20")  # b has no gate left: it completes
    assert handles["task=b"].wait(timeout=240) == "completed"
    cancelled = cli("cancel", sweep_dir)  # only a is alive
    assert cancelled.returncode == 0 and cancelled.stderr.count("cancelling job") == 1, cancelled.stderr
    assert handles["task=a"].wait(timeout=240) == "cancelled"
    assert handles["task=a"].status.requeues == handles["task=b"].status.requeues == {"preempted": 1}
    assert_usage_error(cli("cancel", sweep_dir), f"no task of the sweep in {sweep_dir} is running")
    status = cli("status", sweep_dir)
    assert status.stdout.splitlines()[-1] == f"sweep {sweep_dir}: 2 tasks: 1 cancelled, 1 completed", status.stdout


def test_a_damaged_sweep_table_is_a_damaged_row(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "runs" / "grid"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.json").write_text('{"name": "grid"}')
    says = f"{sweep_dir / 'sweep.json'} is damaged: no 'executor'; submitting the job file again rewrites it"
    for args in (("status",), ("status", "grid")):
        result = cli(*args, cwd=tmp_path, env=ELSEWHERE)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stdout.splitlines()[1].split()[:4] == ["runs/grid", "-", "-", "damaged"], result.stdout
    assert result.stdout.splitlines()[-1] == says, result.stdout  # named whole where the sweep is named
    assert_usage_error(cli("cancel", "grid", cwd=tmp_path, env=ELSEWHERE), says, code=1)
