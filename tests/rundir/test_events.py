"""events.jsonl: appended line by line, read back in order, a torn last line skipped."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from resilient.rundir import EVENTS_FILE, append_event, read_events, read_history


def test_events_read_back_in_order_with_their_fields(tmp_path: Path) -> None:
    append_event(tmp_path / "run", "started", job_id="12", restarts=0)
    append_event(tmp_path / "run", "checkpoint", step=10, path=tmp_path / "a.ckpt")
    events = read_events(tmp_path / "run")
    assert [event["event"] for event in events] == ["started", "checkpoint"]
    assert events[0]["job_id"] == "12" and events[1]["path"] == str(tmp_path / "a.ckpt")
    assert datetime.fromisoformat(events[0]["time"]).tzinfo is not None


def test_a_line_torn_by_a_crash_is_skipped_and_not_extended_and_no_damage(tmp_path: Path) -> None:
    append_event(tmp_path, "started")
    with open(tmp_path / EVENTS_FILE, "a") as file:
        file.write('{"time": "2026-11-29T01:00:00+00:00", "event": "check')
    assert [event["event"] for event in read_events(tmp_path)] == ["started"]
    append_event(tmp_path, "resumed")
    history = read_history(tmp_path)  # the torn line is a whole line now, and still not an event
    assert [event["event"] for event in history.events] == ["started", "resumed"]
    assert history.damage is None  # a crash mid-write is no damage


def test_no_events_before_the_first(tmp_path: Path) -> None:
    assert read_events(tmp_path) == []
