"""Under `umask 000`, nothing the run directory's writers create is writable by other users."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilient.rundir import append_event, update_status
from resilient.rundir._lock import RunLock
from resilient.rundir._modes import current_umask, make_dirs
from resilient.rundir._record import JobRecord, write_record

from ._modes import mode, umask, writable


@pytest.fixture
def umask_000() -> Iterator[None]:
    with umask(0):
        yield


def test_the_run_directory_and_its_files_are_not_writable_by_others(tmp_path: Path, umask_000: None) -> None:
    run_dir = tmp_path / "runs" / "a"
    lock = RunLock(run_dir)
    lock.acquire(job_id="12")
    lock.release()
    write_record(run_dir, JobRecord(job_id="12", executor="local", name="a", submitted=time.time(),
                                    host=socket.gethostname(), tasks=1, warning_signal=int(signal.SIGUSR2)))
    with update_status(run_dir) as status:
        status.state = "completed"
    append_event(run_dir, "finished", step=1)
    assert sorted(path.name for path in run_dir.iterdir()) == [
        ".lock", ".status.json.lock", "events.jsonl", "job.json", "status.json"]
    assert writable(tmp_path / "runs") == []


def test_make_dirs_makes_each_missing_directory_with_its_mode(tmp_path: Path, umask_000: None) -> None:
    (tmp_path / "a").mkdir(0o777)
    made = make_dirs(tmp_path / "a" / "b" / "c", 0o700)
    assert made == [tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert [mode(path) for path in made] == [0o700, 0o700]
    assert make_dirs(tmp_path / "a" / "b") == []


def test_the_umask_is_read_without_being_changed(umask_000: None) -> None:
    os.umask(0o027)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027
