"""Notifications from real jobs on the local executor: a command and a webhook (a real HTTP server
on 127.0.0.1) told of a requeue and a completion, and notifiers that fail without changing the job.

Two jobs run side by side (each spends seconds starting python and torch): one preempted by its
fire drill and then completed, with notifiers that work; one that fails, with a command that hangs
past its timeout and a webhook that answers 500.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.requeue._notifiers import Webhook, process_ended, recorder, records
from tests.rundir._modes import mode

from ._cli import Follower, cli, kill_jobs, story, train_model_file, wait_until


@pytest.fixture(autouse=True)
def _no_job_left(tmp_path: Path) -> Iterator[None]:
    yield
    kill_jobs(tmp_path)


def _job_file(directory: Path, name: str, extra: dict[str, Any], **args: Any) -> Path:
    path = train_model_file(directory, name, out=str(directory / f"{name}.pt"), epochs=1, **args)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **extra}, sort_keys=False))
    return path


def test_jobs_notify_of_requeue_completion_and_failure_and_failing_notifiers_change_nothing(tmp_path: Path) -> None:
    told, hung = tmp_path / "told.jsonl", tmp_path / "hung.jsonl"
    with Webhook() as server:
        working = _job_file(tmp_path, "working", {
            "fire_drill": {"preempt_at_step": 6},
            "notify": {"command": recorder(told), "webhook": server.url("/ok")}})
        failing = _job_file(tmp_path, "failing", {
            "notify": {"command": recorder(hung, "--hang"), "webhook": server.url("/broken"),
                       "timeout": 3}}, fail_at_step=3)
        jobs = [Follower(working, "-o", f"run_dir={tmp_path / 'working'}"),
                Follower(failing, "-o", f"run_dir={tmp_path / 'failing'}")]
        try:
            completed, failed = (job.finish() for job in jobs)
        finally:
            for job in jobs:
                job.stop()

    # Preempted once, then completed: both told, each after its state and event were recorded.
    assert completed.returncode == 0, completed.stderr
    assert [event["event"] for event in story(tmp_path / "working")] == [
        "submitted", "started", "fire_drill", "signal", "checkpoint", "requeued", "started", "resumed", "finished"]
    told_of = records(told)
    assert [(r["RESILIENT_STATE"], r["RESILIENT_EVENT"], r["status_state"], r["last_event"]) for r in told_of] == [
        ("requeued", "requeued", "requeued", "requeued"), ("completed", "finished", "completed", "finished")]
    assert told_of[1]["RESILIENT_STATUS_LINE"].startswith("resilient: working (job ")
    assert told_of[1]["RESILIENT_STATUS_LINE"].endswith(" completed at step 16")
    assert told_of[1]["RESILIENT_RUN_DIR"] == str(tmp_path / "working") and told_of[1]["RESILIENT_STEP"] == "16"
    bodies = server.bodies("/ok")
    assert [body["text"] for body in bodies] == [record["RESILIENT_STATUS_LINE"] for record in told_of]
    assert [body["state"] for body in bodies] == ["requeued", "completed"]
    assert mode(tmp_path / "working" / "config.yaml") == 0o600  # it holds the webhook URL

    # Failed: told by the command, which then hung and was killed with its child; the webhook
    # answered 500. The job ended as it would have without them.
    assert failed.returncode == 1, failed.stderr
    history = story(tmp_path / "failing")
    assert [event["event"] for event in history] == ["submitted", "started", "failed", "notify_failed", "notify_failed"]
    assert json.loads((tmp_path / "failing" / "status.json").read_text())["state"] == "failed"
    errors = {event["via"]: event["error"] for event in history[3:]}
    assert errors == {"command": f"{sys.executable!r} was still running at the timeout and was killed",
                      "webhook": f"{server.url('')} answered HTTP 500 Internal Server Error"}
    (record,) = records(hung)
    assert record["RESILIENT_STATE"] == "failed" and "boom at step 3" in record["RESILIENT_MESSAGE"]
    for pid in record["pids"]:
        wait_until(lambda pid=pid: process_ended(pid), f"the end of notifier process {pid}")
    (body,) = server.bodies("/broken")
    assert body["state"] == "failed" and body["event"] == "failed"
    (log,) = (tmp_path / "failing" / "submitit").glob("*_0_log.err")
    assert "resilient: warning: notification of failed by webhook failed: " in log.read_text()
    status = cli("status", tmp_path / "failing")
    # the last event, as far as the row's width shows it (the goodput column takes its share)
    assert status.returncode == 0 and "notification of failed" in status.stdout, status
