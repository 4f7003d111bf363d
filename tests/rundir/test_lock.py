"""One live job per run directory: the lock names its holder, and dies with it; status updates exclude each other."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import resilient
from resilient.rundir import STATUS_LOCK_FILE, _lock, update_status
from resilient.rundir._lock import RunDirInUse, RunLock, lock_holder

_HOLD = """
import sys, time, resilient
with resilient.Run(checkpoint=[], run_dir=sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""

_TRY_LOCK = "import fcntl, sys; fcntl.flock(open(sys.argv[1]), fcntl.LOCK_EX | fcntl.LOCK_NB)"


@pytest.fixture
def holder(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real process inside a Run on tmp_path/run, until the test kills it."""
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "holding\n"
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_second_run_on_a_live_run_dir_is_refused_naming_the_holder(
        tmp_path: Path, holder: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lock, "_PATIENCE_S", 0.2)
    status_before = (tmp_path / "run" / "status.json").read_text()
    with pytest.raises(RunDirInUse, match=f"pid {holder.pid} on "):
        resilient.Run(checkpoint=[], run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "status.json").read_text() == status_before  # the live run's record is untouched
    assert lock_holder(tmp_path / "run") is not None


def test_the_lock_of_a_killed_run_is_no_obstacle(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_holder(tmp_path / "run") is None  # its .lock file is still there, with its content
    assert (tmp_path / "run" / ".lock").read_text()
    with resilient.Run(checkpoint=[], run_dir=tmp_path / "run") as run:
        assert run.step == 0


def test_a_starting_run_waits_out_a_brief_probe(tmp_path: Path) -> None:
    """`resilient submit` holds the lock while it checks and submits; a job starting then waits."""
    probe = RunLock(tmp_path)
    probe.acquire(job_id=None)
    assert lock_holder(tmp_path) == f"pid {os.getpid()} on {socket.gethostname()}"
    threading.Timer(0.3, probe.release).start()
    late = RunLock(tmp_path)
    late.acquire(job_id="7")  # held by the probe when it starts trying
    assert lock_holder(tmp_path) == f"pid {os.getpid()} on {socket.gethostname()}, job 7"
    late.release()
    assert lock_holder(tmp_path) is None


def _free_for_another_process(lock: Path) -> bool:
    return subprocess.run([sys.executable, "-c", _TRY_LOCK, str(lock)], capture_output=True, check=False).returncode == 0


def test_a_status_update_holds_its_lock_against_other_processes_until_it_ends_however(tmp_path: Path) -> None:
    lock = tmp_path / STATUS_LOCK_FILE
    with update_status(tmp_path):
        assert not _free_for_another_process(lock)
    assert _free_for_another_process(lock)
    with pytest.raises(KeyError), update_status(tmp_path):
        assert not _free_for_another_process(lock)
        raise KeyError("the caller failed")
    assert _free_for_another_process(lock)


def test_a_child_forked_during_a_status_update_does_not_keep_its_lock(tmp_path: Path) -> None:
    with update_status(tmp_path):
        child = os.fork()
        if child == 0:  # a DataLoader worker, say, which lives on after the update
            signal.pause()
            os._exit(0)
    try:
        assert _free_for_another_process(tmp_path / STATUS_LOCK_FILE)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
