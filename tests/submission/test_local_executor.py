"""@resilient.job on submitit's local executor: 2 real processes, a real signal, a real restart."""

from __future__ import annotations

from pathlib import Path

import pytest

import resilient
from resilient.rundir import read_events
from tests.loop._jobs import assert_bitwise_equal

from .jobs import make_job, train_model


def _wait_for(path: Path, handle: resilient.JobHandle) -> None:
    """Until the job creates `path` (or ends, which would be a failure)."""
    while not path.exists():
        assert not handle.done(), handle.stderr(0) + handle.stderr(1)


def test_preempting_one_local_task_restarts_all_and_resumes_bitwise(tmp_path: Path) -> None:
    reference = make_job(tmp_path / "reference", tasks_per_node=2, timeout_min=5)
    assert reference.submit(out=str(tmp_path / "reference.pt")).result(timeout=300) == {"step": 24, "world_size": 2}

    gate = tmp_path / "gate"
    gate.mkdir()
    job = make_job(tmp_path / "run", tasks_per_node=2, timeout_min=5)
    handle = job.submit(out=str(tmp_path / "out.pt"), gate_steps=(10,), gate_dir=str(gate))
    _wait_for(gate / "ready-10", handle)
    handle.preempt(rank=1)  # only the second task gets the signal
    (gate / "go-10").touch()

    assert handle.result(timeout=300) == {"step": 24, "world_size": 2}
    status = handle.status
    assert status.state == "completed" and status.requeues == {"preempted": 1}
    emergency = tmp_path / "run" / "checkpoints" / "emergency" / "step=12.ckpt"  # agreed one step after the signal
    assert resilient.load_checkpoint(emergency)["resilient"]["world_size"] == 2
    assert_bitwise_equal(tmp_path / "reference.pt", tmp_path / "out.pt")


def test_an_exception_fails_the_job_without_requeue(tmp_path: Path) -> None:
    handle = make_job(tmp_path, timeout_min=5).submit(out=str(tmp_path / "out.pt"), fail_at_step=6)
    with pytest.raises(resilient.JobError, match="boom at step 6"):
        handle.result(timeout=300)
    assert handle.status.state == "failed" and handle.status.requeues == {}


def test_an_exception_is_retried_once_with_a_crash_bound_of_one(tmp_path: Path) -> None:
    handle = make_job(tmp_path, timeout_min=5, max_crash_requeues=1).submit(
        out=str(tmp_path / "out.pt"), fail_at_step=6)
    with pytest.raises(resilient.JobError, match="gave up after 1 requeue"):
        handle.result(timeout=300)
    assert handle.status.requeues == {"crashed": 1}


def test_calling_the_job_runs_it_here(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    assert job(out=str(tmp_path / "out.pt")) == {"step": 48, "world_size": 1}
    assert job.run_dir == tmp_path and (tmp_path / "out.pt").exists()
    assert train_model.__name__ == job.__name__


def test_the_debug_executor_runs_at_result(tmp_path: Path) -> None:
    handle = make_job(tmp_path, executor="debug").submit(out=str(tmp_path / "out.pt"), epochs=1)
    assert handle.result() == {"step": 16, "world_size": 1}
    assert handle.state == "completed"


@pytest.mark.parametrize("options, message", [
    ({"executor": "kubernetes"}, "executor"),
    ({"nodes": 0}, "nodes"),
    ({"tasks_per_node": "2"}, "tasks_per_node"),
    ({"partition": "low; rm -rf /"}, "partition"),
    ({"executor": "local", "nodes": 2}, "nodes"),
    ({"executor": "local", "nodes": "1-2"}, "nodes"),
    ({"executor": "slurm", "nodes": "2-1"}, "nodes"),
    ({"warning_signal": "USR9"}, "warning_signal"),
    ({"max_requeues": -1}, "max_requeues"),
    ({"timeout": 5}, "timeout"),
])
def test_bad_job_options_name_the_option(options: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        resilient.job(**options)(train_model)


def test_a_completed_job_called_again_says_so_and_does_not_call_the_function(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    calls = []

    @resilient.job(checkpoint=[], run_dir=tmp_path)
    def count(run: resilient.Run) -> int:
        calls.append(1)
        for _ in run.batches(range(3)):
            pass
        return run.step

    assert count() == 3
    assert count() is None and len(calls) == 1
    assert f"resilient: {tmp_path} already completed; nothing to do" in capfd.readouterr().err
    finished = [e for e in read_events(tmp_path) if e["event"] == "finished"]
    assert finished[0]["step"] == 3 and "step" not in finished[1]
