"""How a start and an end are concluded: the state and exit code written to status.json and the
event recorded, for every outcome, with the job's scheduler answering from recorded output.

What is checked is what lands on disk (status.json, events.jsonl), since that is what the next
start, `resilient status` and users read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resilient.requeue import (
    EXIT_CTRL_C,
    EXIT_STOPPED,
    LOCAL_REQUEUE_EXIT,
    Cause,
    Host,
    LocalHost,
    RequeuePolicy,
    SetupRefused,
    SlurmHost,
    conclude,
)
from resilient.rundir import Beat

from ._recorded import RecordedScheduler

JOB = "4711"


def _status(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "status.json").read_text())


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _given(run_dir: Path, **status: Any) -> None:
    """A status.json as an earlier start of the run left it."""
    record = {"job_id": JOB, "state": "requeued", "requeues": {}, "message": "", "updated": 1.0,
              "cancel_requested": False, **status}
    (run_dir / "status.json").write_text(json.dumps(record))


def _slurm(run_dir: Path, name: str = "preempted_grace", **scheduler: Any) -> tuple[SlurmHost, RecordedScheduler]:
    recorded = RecordedScheduler(name, **scheduler)
    return SlurmHost(job_id=JOB, scheduler=recorded), recorded


def test_a_first_start_is_running_and_recorded(tmp_path: Path) -> None:
    assert conclude.begin(tmp_path, SlurmHost(job_id=JOB), 1) is None
    assert _status(tmp_path)["state"] == "running" and _status(tmp_path)["job_id"] == JOB
    assert [(e["event"], e["host"], e["restarts"]) for e in _events(tmp_path)] == [("started", "slurm", 0)]


def test_a_requeued_start_keeps_its_counts_and_a_new_submission_starts_afresh(tmp_path: Path) -> None:
    _given(tmp_path, requeues={"preempted": 2, "crashed": 1}, cancel_requested=True)
    assert conclude.begin(tmp_path, SlurmHost(job_id=JOB), 1) is None
    assert _status(tmp_path)["requeues"] == {"preempted": 2, "crashed": 1}
    assert _events(tmp_path)[-1]["restarts"] == 3
    assert conclude.begin(tmp_path, SlurmHost(job_id="4712"), 1) is None
    assert _status(tmp_path)["requeues"] == {} and not _status(tmp_path)["cancel_requested"]


def test_each_start_records_its_world_size_and_a_new_submission_starts_the_list_afresh(tmp_path: Path) -> None:
    """A job with a node range comes back on whatever nodes it gets: 2 ranks, then 1."""
    for world_size in (2, 1):
        assert conclude.begin(tmp_path, SlurmHost(job_id=JOB), world_size) is None
    assert _status(tmp_path)["world_sizes"] == [2, 1]
    assert [(e["event"], e["world_size"]) for e in _events(tmp_path)] == [("started", 2), ("started", 1)]
    assert conclude.begin(tmp_path, SlurmHost(job_id="4712"), 4) is None
    assert _status(tmp_path)["world_sizes"] == [4]


def test_a_start_after_one_that_never_recorded_its_end_records_that_one_lost_where_its_heartbeat_was(
        tmp_path: Path) -> None:
    """A SIGKILL leaves the state `running` and no end event; the heartbeat says how far it got."""
    _given(tmp_path, state="running")
    assert conclude.begin(tmp_path, SlurmHost(job_id="4712"), 1, Beat(23)) is None
    lost, started = _events(tmp_path)
    assert (lost["event"], lost["job_id"], lost["step"], started["event"]) == ("lost", JOB, 23, "started")
    assert "after step 23" in lost["message"]


@pytest.mark.parametrize("state", ["requeued", "completed", "failed"])
def test_a_start_after_one_that_recorded_its_end_records_nothing_lost(tmp_path: Path, state: str) -> None:
    _given(tmp_path, state=state)
    assert conclude.begin(tmp_path, SlurmHost(job_id=JOB), 1, Beat(23)) is None
    assert [event["event"] for event in _events(tmp_path)] == ["started"]


def test_a_run_that_gave_up_does_not_start_again_in_the_same_job(tmp_path: Path) -> None:
    _given(tmp_path, state="gave_up", message="preempted: gave up after 2 requeue(s)")
    outcome = conclude.begin(tmp_path, SlurmHost(job_id=JOB), 1)
    assert outcome == conclude.Outcome(1, "gave_up", "preempted: gave up after 2 requeue(s)")
    assert _status(tmp_path)["state"] == "gave_up" and not (tmp_path / "events.jsonl").exists()


@pytest.mark.parametrize("step", [12, None])  # None: a completed run called again did nothing
def test_finishing_completes_the_run(tmp_path: Path, step: int | None) -> None:
    conclude.finish(tmp_path, Host(), step)
    assert _status(tmp_path)["state"] == "completed"
    event = _events(tmp_path)[-1]
    assert event["event"] == "finished" and event.get("step") == step and ("step" in event) == (step is not None)


def test_a_preempted_slurm_job_requeues_itself_after_recording_it(tmp_path: Path) -> None:
    _given(tmp_path, state="running", requeues={"time_limit": 1})
    host, scheduler = _slurm(tmp_path)
    outcome = conclude.after_interrupt(tmp_path, host, RequeuePolicy(), Cause.PREEMPTED, "ckpt-7")
    message = "preempted: emergency checkpoint ckpt-7; requeued (preempted #1)"
    assert outcome == conclude.Outcome(0, "requeued", message)
    assert scheduler.requeued == [JOB]
    assert _status(tmp_path)["requeues"] == {"time_limit": 1, "preempted": 1}
    event = _events(tmp_path)[-1]
    assert (event["event"], event["cause"], event["requeues"]) == ("requeued", "preempted",
                                                                    {"time_limit": 1, "preempted": 1})


def test_preemptions_and_time_limits_share_max_requeues(tmp_path: Path) -> None:
    _given(tmp_path, state="running", requeues={"preempted": 1, "time_limit": 1})
    host, scheduler = _slurm(tmp_path, "time_limit_reached")
    outcome = conclude.after_interrupt(tmp_path, host, RequeuePolicy(max_requeues=2), Cause.TIME_LIMIT, "ckpt-9")
    assert outcome == conclude.Outcome(1, "gave_up", "time_limit: emergency checkpoint ckpt-9; gave up after 2 "
                                                     "requeue(s) (max_requeues=2)")
    assert scheduler.requeued == [] and _status(tmp_path)["state"] == "gave_up"
    assert _events(tmp_path)[-1]["event"] == "gave_up"


def test_a_refused_requeue_fails_the_run(tmp_path: Path) -> None:
    host, _ = _slurm(tmp_path, refuse_requeue=True)
    outcome = conclude.after_interrupt(tmp_path, host, RequeuePolicy(), Cause.PREEMPTED, "ckpt-3")
    assert (outcome.exit_code, outcome.state) == (1, "failed")
    assert "Requested operation is presently disabled" in outcome.message
    assert _status(tmp_path)["state"] == "failed"
    assert [e["event"] for e in _events(tmp_path)] == ["requeued", "failed"]


def test_a_local_task_asks_its_controller_to_restart_it(tmp_path: Path) -> None:
    outcome = conclude.after_interrupt(tmp_path, LocalHost(job_id="99"), RequeuePolicy(), Cause.TIME_LIMIT, "c")
    assert (outcome.exit_code, outcome.state) == (LOCAL_REQUEUE_EXIT, "requeued")


def test_a_plain_process_stops_and_resumes_when_started_again(tmp_path: Path) -> None:
    outcome = conclude.after_interrupt(tmp_path, Host(), RequeuePolicy(), Cause.INTERRUPTED, "c")
    assert outcome == conclude.Outcome(EXIT_STOPPED, "stopped", "interrupted: emergency checkpoint c")
    assert _events(tmp_path)[-1]["cause"] == "interrupted"


def test_ctrl_c_stops_for_good_even_where_the_job_could_requeue(tmp_path: Path) -> None:
    host, scheduler = _slurm(tmp_path)
    outcome = conclude.after_interrupt(tmp_path, host, RequeuePolicy(), Cause.CTRL_C, "c")
    assert outcome == conclude.Outcome(EXIT_CTRL_C, "stopped", "ctrl_c: emergency checkpoint c; run it again to resume")
    assert scheduler.requeued == [] and _events(tmp_path)[-1]["event"] == "stopped"


def test_a_scancel_ends_the_run_cancelled(tmp_path: Path) -> None:
    host, scheduler = _slurm(tmp_path, "scancel")
    outcome = conclude.after_interrupt(tmp_path, host, RequeuePolicy(), Cause.CANCELLED, "c")
    assert outcome == conclude.Outcome(0, "cancelled", "cancelled: emergency checkpoint c")
    assert scheduler.requeued == [] and _events(tmp_path)[-1]["event"] == "cancelled"


def test_a_cancel_requested_by_the_cli_wins_over_the_signals_cause(tmp_path: Path) -> None:
    _given(tmp_path, state="running", cancel_requested=True)
    outcome = conclude.after_interrupt(tmp_path, LocalHost(job_id="99"), RequeuePolicy(), Cause.PREEMPTED, "c")
    assert (outcome.exit_code, outcome.state) == (0, "cancelled")
    assert _events(tmp_path)[-1]["cause"] == "cancelled"


def test_a_second_ctrl_c_stops_without_a_checkpoint(tmp_path: Path) -> None:
    outcome = conclude.after_abort(tmp_path, SlurmHost(job_id=JOB), "stopped by Ctrl-C at step 3")
    assert outcome == conclude.Outcome(EXIT_CTRL_C, "stopped", "stopped by Ctrl-C at step 3")
    assert _events(tmp_path)[-1]["cause"] == "ctrl_c"


def test_a_crash_fails_the_run_by_default(tmp_path: Path) -> None:
    host, scheduler = _slurm(tmp_path)
    assert conclude.after_crash(tmp_path, host, RequeuePolicy(), ValueError("nan loss"), step=14) is None
    assert _status(tmp_path)["state"] == "failed" and _status(tmp_path)["message"] == "crashed: ValueError: nan loss"
    assert scheduler.requeued == [] and _events(tmp_path)[-1]["cause"] == "crashed"
    assert _events(tmp_path)[-1]["step"] == 14  # where it got to: the report's steps lost


def test_a_crash_requeues_within_its_own_bound(tmp_path: Path) -> None:
    _given(tmp_path, state="running", requeues={"preempted": 5})
    host, scheduler = _slurm(tmp_path)
    policy = RequeuePolicy(max_requeues=0, max_crash_requeues=1)
    outcome = conclude.after_crash(tmp_path, host, policy, ValueError("nan loss"))
    assert outcome == conclude.Outcome(0, "requeued", "crashed: ValueError: nan loss; requeued (crashed #1)")
    assert scheduler.requeued == [JOB]
    assert conclude.after_crash(tmp_path, host, policy, ValueError("nan loss")) is None
    assert _status(tmp_path)["state"] == "failed"
    assert _status(tmp_path)["message"] == ("crashed: ValueError: nan loss; gave up after 1 requeue(s) "
                                            "(max_crash_requeues=1)")
    assert scheduler.requeued == [JOB]


def test_a_refused_setup_fails_whatever_the_crash_bound(tmp_path: Path) -> None:
    """Starting it again would be refused again: no requeue is spent on it."""
    host, scheduler = _slurm(tmp_path)
    refusal = type("Refused", (SetupRefused, ValueError), {})("save_only_model=True writes no optimizer")
    assert conclude.after_crash(tmp_path, host, RequeuePolicy(max_crash_requeues=3), refusal) is None
    assert _status(tmp_path)["state"] == "failed" and _status(tmp_path)["requeues"] == {}
    assert _status(tmp_path)["message"] == ("refused: save_only_model=True writes no optimizer; not requeued "
                                            "(a new start would be refused again)")
    assert scheduler.requeued == []


def test_a_crash_of_a_plain_process_fails_whatever_the_bound(tmp_path: Path) -> None:
    assert conclude.after_crash(tmp_path, Host(), RequeuePolicy(max_crash_requeues=3), RuntimeError("x")) is None
    assert _status(tmp_path)["state"] == "failed"
