"""Goodput from recorded events: exact breakdowns of made-up timelines, and the heartbeat a SIGKILL leaves.

Each run is a list of events as `events.jsonl` holds them, at whole seconds from an origin, so
that every part's seconds can be worked out by hand (each test says how).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from resilient.rundir import HEARTBEAT_FILE, Beat, Goodput, Heartbeat, Part, goodput, read_heartbeat

ORIGIN = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[2]


def at(seconds: float) -> str:
    return (ORIGIN + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def ev(moment: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"time": at(moment), "event": event, **fields}


def checkpoint(seconds: float, step: int, stalled: float | None = None, stall: float | None = None,
               **fields: Any) -> dict[str, Any]:
    """A checkpoint committed at `seconds`, training stalled from `stalled` for `stall` (if given)."""
    timing = {} if stalled is None else {"stalled_at": at(stalled), "stall_seconds": stall}
    return ev(seconds, "checkpoint", step=step, path=f"step={step}.ckpt", bytes=1, seconds=0.5, **timing, **fields)


def parts(result: Goodput) -> dict[str, float]:
    return {part.value: round(seconds, 6) for part, seconds in result.parts.items() if seconds}


def assert_partition(result: Goodput) -> None:
    assert sum(result.parts.values()) == pytest.approx(result.wall, abs=1e-6)
    lanes = [segment for lane in result.lanes for segment in lane.segments]
    assert sum(segment.seconds for segment in lanes) == pytest.approx(result.wall, abs=1e-6)
    assert all(earlier.end == later.begin for earlier, later in zip(lanes, lanes[1:]))  # no gap, no overlap


PREEMPTED = [
    ev(0, "submitted", job_id="7", executor="local"),
    ev(2, "started", job_id="7", restarts=0, world_size=1),
    ev(5, "first_step", step=1),
    checkpoint(8, 4, stalled=7, stall=0.5),  # asynchronous: committed after the stall ended
    ev(11, "fire_drill", step=10),
    ev(12, "signal", step=10, reasons=["SIGUSR2"]),
    checkpoint(13, 10, stalled=12, stall=1, rule={"kind": "emergency"}),
    ev(13.5, "requeued", cause="preempted", step=10, requeues={"preempted": 1}, message=""),
    ev(20, "started", job_id="7", restarts=1, world_size=1),
    ev(22, "resumed", step=10, checkpoint="emergency/step=10.ckpt"),
    ev(23, "first_step", step=11),
    checkpoint(30, 16, stalled=29, stall=1),  # synchronous: committed as the stall ended
    ev(40, "finished", step=20, requeues={"preempted": 1}, message=""),
]


def test_a_preempted_then_resumed_run_is_broken_down_exactly() -> None:
    result = goodput(PREEMPTED, now=1e12, live=False)
    assert result.wall == 40
    # queued 0-2 and 13.5-20; restoring 2-5 and 20-23; stalls 7-7.5 and 29-30 (the emergency
    # checkpoint's is stopping's, 12-13.5); training what is left.
    assert parts(result) == {"queued": 8.5, "restoring": 6, "checkpointing": 1.5, "stopping": 1.5,
                             "training": 22.5}
    assert result.percent == pytest.approx(100 * 22.5 / 40)
    [interruption] = result.interruptions
    assert (interruption.start, interruption.cause, interruption.step, interruption.resumed_at,
            interruption.steps_lost) == (1, "preempted", 10, 10, 0)
    assert [len(lane.signals) for lane in result.lanes] == [2, 0]  # the drill and the agreed stop
    assert [len(lane.checkpoints) for lane in result.lanes] == [2, 1]
    assert_partition(result)


KILLED = [
    ev(0, "started", job_id="8", restarts=0, world_size=1),
    ev(1, "first_step", step=1),
    checkpoint(2.5, 4, stalled=2, stall=0.5),
    checkpoint(4.5, 8, stalled=4, stall=0.5),
    # SIGKILLed after step 11: no event; the next submission finds the heartbeat's step.
    ev(10, "submitted", job_id="9", executor="local"),
    ev(12, "lost", job_id="8", step=11, message="the previous start ended without recording how"),
    ev(12, "started", job_id="9", restarts=0, world_size=1),
    ev(13, "resumed", step=8, checkpoint="step=8.ckpt"),
    ev(14, "first_step", step=9),
    ev(20, "finished", step=20, requeues={}, message=""),
]


def test_a_sigkilled_run_lost_the_steps_since_its_last_checkpoint_and_redid_them() -> None:
    result = goodput(KILLED, now=1e12, live=False)
    # start 1 went from step 1 (at 1) to step 8 (taken at 4.5): 0.5 s a step, so step 11 was done
    # at 6. Restoring 0-1, stalls 2-2.5 and 4-4.5, training 1-6 but for them, redone 4.5-6 (after
    # step 8's checkpoint was taken); nothing accounts for 6-10; queued 10-12; start 2: restoring
    # 12-14, training 14-20.
    assert parts(result) == {"restoring": 3, "checkpointing": 1, "training": 2.5 + 6, "redone": 1.5, "other": 4,
                             "queued": 2}
    [interruption] = result.interruptions
    assert (interruption.cause, interruption.step, interruption.resumed_at, interruption.steps_lost) == (
        "lost", 11, 8, 3)
    assert interruption.time == ORIGIN.timestamp() + 6
    assert_partition(result)


def test_a_start_that_resumed_an_older_checkpoint_redid_all_its_training() -> None:
    events = [*PREEMPTED[:11], ev(28, "failed", cause="crashed", step=14, requeues={}, message="crashed: boom")]
    result = goodput(events, now=1e12, live=False)
    [_, crashed] = result.interruptions
    # Nothing saved since the resume at 10: the next start would resume there, so steps 11-14 and
    # all of this start's training (23-28) are redone.
    assert (crashed.cause, crashed.step, crashed.resumed_at, crashed.steps_lost) == ("crashed", 14, 10, 4)
    assert result.parts[Part.REDONE] == 5 and result.parts[Part.TRAINING] == 6.5
    assert_partition(result)


def test_a_live_run_ends_now_and_its_running_start_is_no_interruption() -> None:
    now = ORIGIN.timestamp() + 50
    result = goodput(PREEMPTED[:-1], now=now, live=True, heartbeat=Beat(18))
    assert result.live and result.ended == now and result.wall == 50
    assert parts(result)["training"] == 22.5 - 10 + 20  # the second start trains from 23 until now
    assert len(result.interruptions) == 1
    assert_partition(result)


def test_a_live_submission_not_started_yet_is_queued_until_now() -> None:
    result = goodput([ev(0, "submitted", job_id="7", executor="slurm")], now=ORIGIN.timestamp() + 30, live=True)
    assert parts(result) == {"queued": 30} and result.percent == 0
    assert_partition(result)


def test_a_last_start_that_died_unrecorded_ends_at_its_heartbeat() -> None:
    result = goodput(KILLED[:4], now=1e12, live=False, heartbeat=Beat(11))
    assert result.wall == 6  # its pace says so (see above)
    [interruption] = result.interruptions
    assert (interruption.cause, interruption.step, interruption.resumed_at, interruption.steps_lost) == (
        "lost", 11, 8, 3)
    assert parts(result) == {"restoring": 1, "checkpointing": 1, "training": 2.5, "redone": 1.5}
    assert_partition(result)


def test_a_run_written_before_the_new_fields_is_read_as_well_as_it_can_be() -> None:
    """No first_step (restoring ends at the resume, or at once), no stalls, no step at the ends."""
    old = [{key: value for key, value in event.items() if key not in ("stalled_at", "stall_seconds", "step")}
           | ({"step": event["step"]} if event["event"] in ("signal", "resumed", "checkpoint") else {})
           for event in PREEMPTED if event["event"] != "first_step"]
    result = goodput(old, now=1e12, live=False)
    # queued 0-2 and 13.5-20; restoring 20-22 (to the resume); stopping 12-13.5; training the rest.
    assert parts(result) == {"queued": 8.5, "restoring": 2, "stopping": 1.5, "training": 28}
    [interruption] = result.interruptions
    assert (interruption.step, interruption.steps_lost) == (10, 0)  # the agreed stop's step
    assert_partition(result)


def test_no_events_no_time() -> None:
    result = goodput([], now=100.0, live=False)
    assert result.wall == 0 and result.percent is None and not result.interruptions


def test_the_heartbeat_outlives_a_sigkilled_process(tmp_path: Path) -> None:
    """What rank 0 stored before a SIGKILL is read back: the page cache keeps a MAP_SHARED page."""
    code = ("import os, signal, sys; from pathlib import Path; from resilient.rundir import Heartbeat\n"
            "beat = Heartbeat(Path(sys.argv[1]))\n"
            "for step in range(1, 24): beat.beat(step)\n"
            "os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env={"PYTHONPATH": str(REPO)}, timeout=60,
                            check=False)
    assert killed.returncode == -9
    beat = read_heartbeat(tmp_path)
    assert beat is not None and beat.step == 23
    Heartbeat(tmp_path).close()  # the next start resets it: no step yet
    assert read_heartbeat(tmp_path).step is None


def test_a_heartbeat_that_is_not_ours_is_none(tmp_path: Path) -> None:
    (tmp_path / HEARTBEAT_FILE).write_bytes(b"\x00" * 7 + b"\x80")  # -2**63: no count of steps
    assert read_heartbeat(tmp_path) is None
    (tmp_path / HEARTBEAT_FILE).write_bytes(b"short")
    assert read_heartbeat(tmp_path) is None
