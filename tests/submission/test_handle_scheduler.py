"""A SLURM job's handle asks its Scheduler, never the commands: state, cancel and fire drill, fast.

The scheduler answers from recorded output (tests/requeue/_recorded.py), so what the handle
concludes from SLURM's queue, and what it asks SLURM to do, is checked without a cluster.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from resilient.rundir._record import JobRecord
from resilient.submission import JobHandle
from tests.requeue._recorded import RecordedScheduler


def _handle(run_dir: Path, queue_state: str) -> tuple[JobHandle, RecordedScheduler]:
    scheduler = RecordedScheduler("fire_drill", queue_state_text=queue_state)
    record = JobRecord(job_id="4711", executor="slurm", name="train", submitted=time.time(), host="head", tasks=2,
                       warning_signal=int(signal.SIGUSR2))
    return JobHandle(run_dir, record, scheduler=scheduler), scheduler


def _events(run_dir: Path) -> list[str]:
    return [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_a_queued_job_is_pending_and_cancelling_it_records_the_cancel(tmp_path: Path) -> None:
    handle, scheduler = _handle(tmp_path, "PENDING\n")
    assert handle.state == "pending" and not handle.done()
    assert handle.cancel() is True
    assert scheduler.cancelled == [("4711", None)]
    assert handle.status.state == "cancelled" and _events(tmp_path) == ["cancel_requested", "cancelled"]


def test_a_running_job_is_cancelled_by_the_scheduler_alone(tmp_path: Path) -> None:
    handle, scheduler = _handle(tmp_path, "RUNNING\n")
    assert handle.cancel() is False
    assert scheduler.cancelled == [("4711", None)] and _events(tmp_path) == ["cancel_requested"]


def test_a_fire_drill_sends_the_warning_signal_through_the_scheduler(tmp_path: Path) -> None:
    handle, scheduler = _handle(tmp_path, "RUNNING\n")
    handle.preempt()
    assert scheduler.cancelled == [("4711", signal.SIGUSR2)] and _events(tmp_path) == ["fire_drill"]


def test_a_job_gone_from_the_queue_without_saying_how_is_lost(tmp_path: Path) -> None:
    handle, _ = _handle(tmp_path, "")
    assert handle.done() and handle.state == "lost"
