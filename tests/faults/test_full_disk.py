"""A checkpoint that does not fit: a full file system (a small tmpfs) and a file size limit (`ulimit -f`).

Two checkpoints fit, the third does not. The job must end with a message that says why
("No space left on device", "File too large") and where (the checkpoint directory), the two
older checkpoints must still load and hold their steps' state, nothing that looks like a
checkpoint may be left half-written, and a restart must resume from the newest whole one.
Mounting needs root: without it (or where mount fails) the tmpfs test is skipped, saying so.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

import pytest

from ._faults import TALLY, Child, audit, job_command, verify_in_process

DISK_KIB = 700  # room for two checkpoints of a 256 KiB state (about 300 KiB each), not three
FILE_LIMIT = 360 * 1024  # the per-rank file grows by 128 KiB a step: 160, 290, then 420 KiB


@pytest.fixture
def small_disk(mount_tmpfs: Callable[[str], Path]) -> Path:
    return mount_tmpfs(f"{DISK_KIB}k")


def _check_aftermath(child: Child, code: int, directory: Path, why: str, run_dir: Path, **job: object) -> None:
    assert code not in (0, -9), f"the job should have failed to save: {code}\n{child.stderr[-3000:]}"
    TALLY.add(fault="full disks" if why.startswith("No space") else "file size limits")
    said = [line for line in child.stderr.splitlines() if why in line and str(directory) in line]
    assert said, f"no line names both {why!r} and {directory}:\n{child.stderr[-3000:]}"
    found = audit([directory], job["kib"], job["grow_kib"])  # type: ignore[arg-type]
    TALLY.add(bad_loads=len(found.bad))
    assert not found.bad, f"BAD LOADS: {found.bad}"
    assert not found.invalid, f"partial checkpoints that look like checkpoints: {found.invalid}"
    assert sorted(found.valid.values()) == [1, 2], found.valid
    code, listing = verify_in_process(directory)
    assert code == 0, listing

    restart = Child(job_command(run_dir, report_only=True, **job))  # type: ignore[arg-type]
    assert restart.finish() == 0, restart.stderr[-3000:]
    resumed = restart.event("resumed")
    assert resumed is not None and resumed["problem"] is None, resumed
    assert (resumed["step"], resumed["checkpoint"]) == (2, str(directory / "step=2.ckpt"))


def test_a_full_file_system_fails_the_save_and_keeps_older_checkpoints(small_disk: Path, tmp_path: Path) -> None:
    job = {"dirpath": small_disk, "rules": "keep", "kib": 256, "grow_kib": 0, "steps": 6}
    child = Child(job_command(tmp_path / "run", **job))
    code = child.finish()
    _check_aftermath(child, code, small_disk, "No space left on device", tmp_path / "run", **job)


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def test_a_file_size_limit_fails_the_save_and_keeps_older_checkpoints(tmp_path: Path) -> None:
    job = {"rules": "keep", "kib": 16, "grow_kib": 128, "steps": 6}
    run_dir = tmp_path / "run"
    child = Child(job_command(run_dir, **job), preexec_fn=_limit_file_size)
    code = child.finish()
    _check_aftermath(child, code, run_dir / "checkpoints", "File too large", run_dir, **job)
