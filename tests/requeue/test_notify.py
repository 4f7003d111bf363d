"""Notifications of a start's end: what they say, when they go, and that their failure changes nothing.

The pure parts (the payload and environment for each state, the time a notification may take,
the refusals of `Notify`) are checked directly. The rest runs `conclude` as the job does, with
real commands (`scripts/record_notification.py`) and a real HTTP server on 127.0.0.1; SLURM
answers from recorded `scontrol show job` output, its end time moved where the test needs it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from resilient.requeue import NOTIFY_STATES, Cause, Host, LocalHost, Notify, SlurmHost, conclude
from resilient.requeue._notify import END_MARGIN_S, environment, payload, time_left
from resilient.requeue._policy import RequeuePolicy
from resilient.rundir import Event, JobRecord, State, write_record
from resilient.settings import InvalidSetting
from resilient.slurm import JobInfo
from resilient.submission import JobOptions
from tests.cli._cli import wait_until

from ._notifiers import Webhook, process_ended, recorder, records
from ._recorded import RecordedScheduler

JOB = "4711"
POLICY = RequeuePolicy(max_requeues=None, max_crash_requeues=0)


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@dataclass
class _EndingScheduler(RecordedScheduler):
    """The recorded preempted job, ending `ends_in_s` from now; notes whether a notification had
    been recorded in `notified` by the time the job asked to be requeued."""

    ends_in_s: float = 60.0
    notified: Path | None = None
    notified_before_requeue: list[bool] = field(default_factory=list)

    def show_job(self, job_id: str) -> JobInfo:
        end = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + self.ends_in_s))
        return JobInfo({**super().show_job(job_id).fields, "EndTime": end})

    def requeue(self, job_id: str) -> None:
        assert self.notified is not None
        self.notified_before_requeue.append(self.notified.exists())
        super().requeue(job_id)


# ---------------------------------------------------------------- what a notification says


@pytest.mark.parametrize("state", NOTIFY_STATES, ids=str)
def test_the_payload_and_environment_of_each_state(tmp_path: Path, state: State) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_record(run_dir, JobRecord(job_id=JOB, executor="slurm", name="big-run", submitted=1.0, host="h", tasks=2,
                                    warning_signal=12))
    message = "" if state == State.COMPLETED else f"preempted: emergency checkpoint {run_dir}/checkpoints/x.ckpt"
    event = Event.FINISHED if state == State.COMPLETED else Event(str(state))
    facts = payload(run_dir, JOB, state, event, message, step=70 if state == State.COMPLETED else None)
    assert facts == {"text": facts["text"], "event": event, "state": str(state), "run_dir": str(run_dir),
                     "job_id": JOB, "name": "big-run", "message": message,
                     "step": 70 if state == State.COMPLETED else None}
    if state == State.COMPLETED:
        assert facts["text"] == "resilient: big-run (job 4711) completed at step 70"
    else:  # the run directory's own paths are named from it
        assert facts["text"] == f"resilient: big-run (job 4711) {state}: preempted: emergency checkpoint checkpoints/x.ckpt"
    variables = environment(facts, base={"PATH": "/bin", "RESILIENT_STATE": "stale"})
    assert variables == {"PATH": "/bin", "RESILIENT_EVENT": event, "RESILIENT_STATE": str(state),
                         "RESILIENT_RUN_DIR": str(run_dir), "RESILIENT_JOB_ID": JOB, "RESILIENT_NAME": "big-run",
                         "RESILIENT_MESSAGE": message, "RESILIENT_STATUS_LINE": facts["text"],
                         "RESILIENT_STEP": "70" if state == State.COMPLETED else ""}


def test_a_run_without_a_job_record_is_named_by_its_directory_and_a_long_message_stays_one_line(
        tmp_path: Path) -> None:
    facts = payload(tmp_path / "plain", None, State.FAILED, Event.FAILED, "crashed: ValueError: " + "x\n" * 1000)
    assert facts["text"].startswith("resilient: plain failed: crashed: ValueError: x x x")
    assert "\n" not in facts["text"] and len(facts["text"]) <= 500
    assert environment(facts, base={})["RESILIENT_JOB_ID"] == ""


def test_the_time_a_notification_may_take() -> None:
    assert time_left(None, 10.0, now=1000.0) == 10.0  # no end: the timeout
    assert time_left(2000.0, 10.0, now=1000.0) == 10.0
    assert time_left(1000.0 + END_MARGIN_S + 4, 10.0, now=1000.0) == 4.0  # what is left before the margin
    assert time_left(1000.0 + END_MARGIN_S, 10.0, now=1000.0) <= 0  # none: skipped
    assert time_left(900.0, 10.0, now=1000.0) <= 0


@pytest.mark.parametrize(("settings", "says"), [
    ({}, "notify needs a command, a webhook or both"),
    ({"command": []}, "command is empty"),
    ({"command": "  "}, "command is empty"),
    ({"command": "say 'unclosed"}, "cannot be split into words"),
    ({"command": ["ok", 3]}, "command words must be strings, not 3"),
    ({"command": ["a\0b"]}, "NUL"),
    ({"webhook": "ftp://example.org/hook"}, "has scheme 'ftp': only http:// and https://"),
    ({"webhook": "hooks.slack.com/services/x"}, "has no scheme"),
    ({"webhook": "https://"}, "names no host"),
    ({"webhook": "https://example.org:port/x"}, "is not a URL"),
    ({"webhook": "https://example.org/a b"}, "is refused: a URL is one word"),
    ({"command": "x", "on": ["finished"]}, "'finished' is not a state to notify of (a run that finished is 'completed')"),
    ({"command": "x", "on": ["running"]}, "'running' is not a state to notify of"),
    ({"command": "x", "on": []}, "on is empty"),
    ({"command": "x", "on": "completed"}, "on must be a list of states"),
    ({"command": "x", "timeout_s": 0}, "timeout must be more than 0 and at most 300 seconds, not 0"),
    ({"command": "x", "timeout_s": 3600}, "at most 300 seconds, not 3600"),
    ({"command": "x", "timeout_s": True}, "timeout must be a number of seconds, not True"),
])
def test_notify_refuses_what_cannot_work(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        Notify(**settings)
    assert says in str(caught.value)


def test_only_a_notify_object_is_taken_by_the_job_options() -> None:
    with pytest.raises(TypeError, match=r"^notify must be a resilient.Notify, not \{'command': 'x'\}"):
        JobOptions(notify={"command": "x"})  # type: ignore[arg-type]


def test_a_command_string_is_split_as_a_shell_would_and_never_run_by_one() -> None:
    notify = Notify(command="notify-send 'training done' $HOME", on=["completed"], timeout_s=2)
    assert notify.command == ("notify-send", "training done", "$HOME")
    assert notify.on == {State.COMPLETED} and notify.timeout_s == 2.0


# ---------------------------------------------------------------- when it goes, with real commands and HTTP


def test_a_requeue_is_told_after_its_state_and_event_are_recorded_and_before_scontrol_requeue(tmp_path: Path) -> None:
    out = tmp_path / "notified.jsonl"
    scheduler = _EndingScheduler("preempted_grace", notified=out)
    with Webhook() as server:
        notify = Notify(command=recorder(out), webhook=server.url("/ok"))
        outcome = conclude.after_interrupt(tmp_path, SlurmHost(job_id=JOB, scheduler=scheduler), POLICY,
                                           Cause.PREEMPTED, "emergency/step=30.ckpt", notify=notify)
    assert (outcome.state, outcome.exit_code) == (State.REQUEUED, 0)
    assert scheduler.requeued == [JOB] and scheduler.notified_before_requeue == [True]
    (told,) = records(out)
    assert (told["RESILIENT_STATE"], told["RESILIENT_EVENT"], told["RESILIENT_JOB_ID"]) == ("requeued", "requeued", JOB)
    assert (told["status_state"], told["last_event"]) == ("requeued", "requeued")  # recorded before it ran
    assert told["RESILIENT_STATUS_LINE"] == (f"resilient: {tmp_path.name} (job {JOB}) requeued: preempted: "
                                             "emergency checkpoint emergency/step=30.ckpt; requeued (preempted #1)")
    ((path, body, content_type),) = server.received
    assert (path, content_type) == ("/ok", "application/json")
    assert body["text"] == told["RESILIENT_STATUS_LINE"] and body["state"] == "requeued"
    assert body["run_dir"] == str(tmp_path) and body["message"] == outcome.message
    assert [event["event"] for event in _events(tmp_path)] == ["requeued"]  # success adds nothing


def test_with_no_time_left_before_the_end_the_notification_is_skipped_and_the_requeue_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "notified.jsonl"
    scheduler = _EndingScheduler("preempted_grace", ends_in_s=END_MARGIN_S - 1, notified=out)
    outcome = conclude.after_interrupt(tmp_path, SlurmHost(job_id=JOB, scheduler=scheduler), POLICY, Cause.PREEMPTED,
                                       "emergency/step=30.ckpt", notify=Notify(command=recorder(out)))
    assert outcome.state == State.REQUEUED and scheduler.requeued == [JOB]
    assert not out.exists()
    requeued, skipped = _events(tmp_path)
    assert (requeued["event"], skipped["event"], skipped["state"]) == ("requeued", "notify_failed", "requeued")
    assert skipped["error"].startswith("skipped: the job ends in ") and "via" not in skipped


def test_a_hung_command_and_a_silent_webhook_fail_alone_and_the_hung_group_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "notified.jsonl"
    plain = tmp_path / "plain"
    # A program path longer than any quote is shown whole: the error must still say why it failed.
    program = tmp_path / ("python-" + "x" * 120)
    program.symlink_to(os.path.realpath(sys.executable))
    command = [str(program), *recorder(out, "--hang")[1:]]
    with Webhook() as server:
        notify = Notify(command=command, webhook=server.url("/silent"), timeout_s=3)
        outcome = conclude.after_crash(tmp_path, LocalHost(job_id=JOB), POLICY, RuntimeError("boom"), notify=notify)
    assert outcome is None and conclude.after_crash(plain, LocalHost(job_id=JOB), POLICY, RuntimeError("boom")) is None
    assert [json.loads((d / "status.json").read_text())["state"] for d in (tmp_path, plain)] == ["failed", "failed"]
    (told,) = records(out)
    assert told["RESILIENT_STATE"] == "failed" and told["RESILIENT_MESSAGE"] == "crashed: RuntimeError: boom"
    for pid in told["pids"]:  # the command and the child it started
        wait_until(lambda pid=pid: process_ended(pid), f"the end of notifier process {pid}")
    failed, *problems = _events(tmp_path)
    assert failed["event"] == "failed"
    assert {(problem["event"], problem["via"]) for problem in problems} == {("notify_failed", "command"),
                                                                              ("notify_failed", "webhook")}
    errors = {problem["via"]: problem["error"] for problem in problems}
    assert errors["command"].endswith("was still running at the timeout and was killed")
    assert errors["webhook"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize(("command", "says"), [
    (["/nonexistent/notifier"], "'/nonexistent/notifier' could not start: No such file or directory"),
    ([sys.executable, "-c", "raise SystemExit(3)"], "exited with 3"),
])
def test_a_command_that_fails_and_a_webhook_answering_500_leave_the_end_as_it_was(
        tmp_path: Path, command: list[str], says: str) -> None:
    with Webhook() as server:
        conclude.finish(tmp_path, Host(job_id=None), 12, Notify(command=command, webhook=server.url("/broken")))
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "completed"
    finished, *problems = _events(tmp_path)
    assert finished["event"] == "finished" and {problem["event"] for problem in problems} == {"notify_failed"}
    errors = {problem["via"]: problem["error"] for problem in problems}
    assert says in errors["command"]
    assert errors["webhook"] == f"{server.url('')} answered HTTP 500 Internal Server Error"
    (body,) = server.bodies("/broken")
    assert body["text"] == f"resilient: {tmp_path.name} completed at step 12" and body["step"] == 12


def test_only_the_states_asked_for_are_told(tmp_path: Path) -> None:
    out = tmp_path / "notified.jsonl"
    notify = Notify(command=recorder(out), on=["completed"])
    conclude.after_crash(tmp_path, LocalHost(job_id=JOB), POLICY, RuntimeError("boom"), notify=notify)
    assert not out.exists()
    conclude.finish(tmp_path, LocalHost(job_id=JOB), None, notify)  # a completed run called again: no news
    assert not out.exists()
    conclude.finish(tmp_path, LocalHost(job_id=JOB), 5, notify)
    assert [told["RESILIENT_STATE"] for told in records(out)] == ["completed"]

