"""A damaged job.json, status.json or events.jsonl is named with what is wrong, never half-read."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from resilient.rundir import (
    EVENTS_FILE,
    DamagedFile,
    JobRecord,
    append_event,
    read_events,
    read_history,
    read_record,
    read_status,
    update_status,
    write_record,
)

_RECORD = {"job_id": "12", "executor": "local", "name": "n", "submitted": 1.0, "host": "h", "tasks": 1,
           "warning_signal": int(signal.SIGUSR2)}


@pytest.mark.parametrize("content, says", [
    (b"\xff\xfe{", "not JSON"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b'{"state": 5}', "'state' is 5, not str"),
    (b'{"state": "sleeping"}', "state 'sleeping' is none of running"),
    (b'{"requeues": {"preempted": "2"}}', "requeues"),
    (b'{"requeues": []}', "'requeues' is [], not dict"),
    (b'{"cancel_requested": 1}', "'cancel_requested' is 1, not bool"),
])
def test_a_damaged_status_file_is_named_with_what_is_wrong(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "status.json").write_bytes(content)
    with pytest.raises(DamagedFile, match="status.json is damaged: .*" + says.replace("[", r"\[").replace("]", r"\]")):
        read_status(tmp_path)
    with pytest.raises(DamagedFile), update_status(tmp_path):  # the job is refused the same way
        pass


@pytest.mark.parametrize("change, says", [
    ({"tasks": "1"}, "'tasks' is '1', not int"),
    ({"tasks": 0}, "tasks is 0"),
    ({"executor": "cloud"}, "executor 'cloud' is none of local, slurm, debug"),
    ({"warning_signal": 99}, "warning_signal 99 is not a signal"),
    ({"submitted": True}, "'submitted' is True, not int or float"),
    ({"host": None}, "'host' is None, not str"),
])
def test_a_damaged_job_record_is_named_with_what_is_wrong(tmp_path: Path, change: dict, says: str) -> None:
    (tmp_path / "job.json").write_text(json.dumps({**_RECORD, **change}))
    with pytest.raises(DamagedFile, match="job.json is damaged: " + says):
        read_record(tmp_path)


def test_a_job_record_without_a_field_or_not_json_is_damaged(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text(json.dumps({key: value for key, value in _RECORD.items() if key != "tasks"}))
    with pytest.raises(DamagedFile, match="no 'tasks'"):
        read_record(tmp_path)
    (tmp_path / "job.json").write_bytes(b"\x00garbage")
    with pytest.raises(DamagedFile, match="not JSON"):
        read_record(tmp_path)


def test_a_written_record_reads_back(tmp_path: Path) -> None:
    record = JobRecord(job_id="7", executor="slurm", name="n", submitted=time.time(), host=socket.gethostname(),
                       tasks=2, warning_signal=int(signal.SIGUSR1))
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    assert read_record(tmp_path / "nothing") is None


@pytest.mark.parametrize("line, says", [
    (b'{"time": "2026-12-01T10:00:00\xff", "event": "started"}', "line 2: byte 0xff is not UTF-8"),
    (b'{"time": "05:75:14", "event": "started"}', "line 2: time '05:75:14' is not an ISO 8601 time"),
    (b'{"time": "2026-12-01T05:75:14+01:00", "event": "started"}', "line 2: time"),
    (b'{"event": "started"}', "line 2: not an event"),
    (b'["started"]', "line 2: not an event"),
    (b'{"time": "2026-12-01T10:00:00", "event": "checkpoint", "step": "ten"}', "line 2: 'step' is 'ten', not int"),
    (b'{"time": "2026-12-01T10:00:00", "event": "checkpoint", "bytes": null}', "line 2: 'bytes' is None, not int"),
    (b'{"time": "2026-12-01T10:00:00", "event": "signal", "reasons": [1]}', "line 2: reasons [1] are not names"),
    (b'{"time": "2026-12-01T10:00:00", "event": "requeued", "requeues": {"x": 1.5}}', "line 2: requeues"),
])
def test_a_damaged_event_is_skipped_and_named_and_the_others_still_read(tmp_path: Path, line: bytes,
                                                                        says: str) -> None:
    append_event(tmp_path, "started", job_id="1")
    with open(tmp_path / EVENTS_FILE, "ab") as file:
        file.write(line + b"\n")
    append_event(tmp_path, "finished", step=3)
    history = read_history(tmp_path)
    assert [event["event"] for event in history.events] == ["started", "finished"]
    assert history.damage is not None and f"events.jsonl is damaged: {says}" in str(history.damage), history.damage
    assert [event["event"] for event in read_events(tmp_path)] == ["started", "finished"]
