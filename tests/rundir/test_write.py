"""The run directory's one writer: a failed write leaves the old file whole and no temporary file,
and a finished write is fsynced, file and directory. Real files throughout; only the operating
system's calls are made to fail."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from resilient.rundir import write_atomically, write_json

from ._modes import mode, umask

OLD = '{\n "state": "running"\n}\n'


@pytest.fixture
def written(tmp_path: Path) -> Path:
    path = tmp_path / "status.json"
    path.write_text(OLD)
    return path


def _untouched(path: Path) -> None:
    assert path.read_text() == OLD
    assert sorted(entry.name for entry in path.parent.iterdir()) == [path.name], "a temporary file was left behind"


def _failing(error: OSError) -> Callable[..., None]:
    def fail(*args: object) -> None:
        raise error
    return fail


@pytest.mark.parametrize("call", ["replace", "fsync"])
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(
    written: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    monkeypatch.setattr(os, call, _failing(OSError(5, "Input/output error")))
    with pytest.raises(OSError, match="Input/output error"):
        write_json(written, {"state": "requeued"})
    monkeypatch.undo()
    _untouched(written)


def test_a_value_json_cannot_hold_writes_nothing(written: Path) -> None:
    with pytest.raises(TypeError):
        write_json(written, {"state": object()})
    _untouched(written)


# Run in a child process: the limit (`ulimit -f`) binds every file the process writes, and the
# test runner's own output may be a file bigger than it.
_WRITE_UNDER_A_LIMIT = """
import resource, signal, sys
from pathlib import Path
from resilient.rundir import write_json
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so that a write past the limit says EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    write_json(Path(sys.argv[1]), {"message": "x" * 8192})
except OSError as error:
    print(error.strerror)
"""


def test_a_file_too_large_for_its_limit_leaves_the_old_file(written: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _WRITE_UNDER_A_LIMIT, str(written)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "File too large"), done.stderr
    _untouched(written)


def test_a_full_file_system_leaves_the_old_file(mount_tmpfs: Callable[[str], Path]) -> None:
    disk = mount_tmpfs("64k")
    path = disk / "status.json"
    path.write_text(OLD)
    (disk / "filler").write_bytes(b"\0" * (56 * 1024))  # one page of the 16 left
    with pytest.raises(OSError, match="No space left on device"):
        write_json(path, {"message": "x" * 16 * 1024})
    (disk / "filler").unlink()
    _untouched(path)


def test_a_written_file_is_fsynced_and_so_is_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[tuple[int, int]] = []  # (device, inode) of each descriptor fsynced
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        status = os.fstat(descriptor)
        synced.append((status.st_dev, status.st_ino))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "job.json"
    write_json(path, {"job_id": "12"})
    assert synced == [_identity(path), _identity(tmp_path)], "first the file, then the directory with its new name"


def _identity(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def test_a_write_replaces_the_file_with_the_mode_it_asks_for(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with umask(0):
        write_atomically(path, "old: 1\n", mode=0o644)
        write_atomically(path, "new: 2\n", mode=0o600)
    assert path.read_text() == "new: 2\n"
    assert mode(path) == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["config.yaml"]
