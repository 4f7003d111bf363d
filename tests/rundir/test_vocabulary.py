"""States and event names are on disk in every run: as enums they must write and print exactly the
strings they were before, and read back as themselves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from resilient.rundir import (
    EVENTS_FILE,
    STATUS_FILE,
    Event,
    State,
    append_event,
    read_status,
    update_status,
)

STATES = ["running", "requeued", "completed", "failed", "cancelled", "gave_up", "stopped"]
EVENTS = ["submitted", "started", "resumed", "checkpoint", "checkpoint_failed", "signal", "fire_drill", "requeued",
          "finished", "failed", "gave_up", "cancelled", "stopped", "cancel_requested", "notify_failed", "first_step",
          "lost"]


def test_the_values_are_those_runs_already_hold() -> None:
    assert [state.value for state in State] == STATES
    assert [event.value for event in Event] == EVENTS


@pytest.mark.parametrize("member", [*State, *Event], ids=str)
def test_a_member_reads_as_its_value_wherever_it_is_formatted(member: State | Event) -> None:
    value = member.value
    printed = (str(member), f"{member}", f"{member:>20}", "%s" % member)  # noqa: UP031
    assert printed == (value, value, f"{value:>20}", value)
    assert json.dumps({member: member}) == json.dumps({value: value})
    assert member == value and {value: 1}[member] == 1


def test_status_json_is_written_byte_for_byte_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1700000000.5)
    with update_status(tmp_path) as status:
        status.job_id, status.state = "12", State.REQUEUED
        status.requeues["preempted"] = 1
        status.message = "preempted: emergency checkpoint step=3.ckpt; requeued (preempted #1)"
    assert (tmp_path / STATUS_FILE).read_text() == (
        '{\n'
        ' "cancel_requested": false,\n'
        ' "job_id": "12",\n'
        ' "message": "preempted: emergency checkpoint step=3.ckpt; requeued (preempted #1)",\n'
        ' "requeues": {\n'
        '  "preempted": 1\n'
        ' },\n'
        ' "state": "requeued",\n'
        ' "updated": 1700000000.5,\n'
        ' "world_sizes": []\n'
        '}\n'
    )
    assert read_status(tmp_path).state is State.REQUEUED


def test_an_event_line_is_written_as_before(tmp_path: Path) -> None:
    append_event(tmp_path, Event.CANCEL_REQUESTED, job_id="12")
    line = (tmp_path / EVENTS_FILE).read_text()
    written = json.loads(line)["time"]
    assert line == f'{{"time": "{written}", "event": "cancel_requested", "job_id": "12"}}\n'
