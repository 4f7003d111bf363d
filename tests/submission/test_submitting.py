"""What `.submit()` leaves behind: nothing when it fails, private pickles, and quiet rank logs."""

from __future__ import annotations

import logging
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from submitit.core.job_environment import SignalHandler

import resilient
from resilient.submission import SlurmUnavailable, SubmissionError
from tests.rundir._modes import OTHERS, mode, umask, writable

from .jobs import continued, make_job

_REFUSING_SBATCH = "#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n"


def _path_with(directory: Path, **commands: str) -> str:
    """A PATH of `directory` alone, holding these commands (name: script): no real SLURM there."""
    directory.mkdir()
    for name, script in commands.items():
        (directory / name).write_text(script)
        (directory / name).chmod(0o755)
    return str(directory)


def test_a_slurm_job_where_slurm_is_missing_is_refused_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path / "bin"))
    job = make_job(tmp_path / "runs" / "train", executor="slurm")
    with pytest.raises(SlurmUnavailable, match=r"SLURM is not available here \(no sbatch or srun on PATH\)"):
        job.submit(out=str(tmp_path / "out.pt"))
    assert not (tmp_path / "runs").exists()


def test_a_refused_submission_takes_away_what_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path / "bin", sbatch=_REFUSING_SBATCH, srun="#!/bin/sh\n"))
    with pytest.raises(SubmissionError, match="the slurm submission failed: .*invalid partition specified"):
        make_job(tmp_path / "runs" / "new", executor="slurm").submit(out="out.pt")
    assert not (tmp_path / "runs").exists()

    existing = tmp_path / "existing"
    (existing / "submitit").mkdir(parents=True)
    (existing / "submitit" / "7_0_log.out").write_text("an earlier job's log")
    (existing / "events.jsonl").write_text("")
    before = sorted(existing.rglob("*"))
    with pytest.raises(SubmissionError):
        make_job(existing, executor="slurm").submit(out="out.pt")
    assert sorted(existing.rglob("*")) == before  # no lock, pickle or batch script left


@pytest.fixture
def submitit_handlers() -> Iterator[None]:
    """SIGTERM and SIGCONT as submitit's job process has them: logged as bypassed; restored after."""
    bypass = SignalHandler(None, None, None).bypass  # type: ignore[arg-type]
    previous = {signum: signal.signal(signum, bypass) for signum in (signal.SIGTERM, signal.SIGCONT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_after_the_job_sigterm_and_sigcont_leave_no_warning(tmp_path: Path, submitit_handlers: None,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """SLURM sends both at every requeue and scancel, after the Run has given the signals back."""
    job = resilient.job(checkpoint=[], run_dir=tmp_path, executor="debug")(continued)
    assert job.submit().result() == "continued"
    with caplog.at_level(logging.INFO, logger="submitit"):
        os.kill(os.getpid(), signal.SIGCONT)
        os.kill(os.getpid(), signal.SIGTERM)  # ignored, as submitit ignores it, until SLURM's SIGKILL
    assert "Bypassing" not in caplog.text


def test_a_local_job_under_umask_000_writes_nothing_others_can_change_and_keeps_its_pickle_private(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "continued"
    with umask(0):
        handle = resilient.job(checkpoint=[], run_dir=run_dir, timeout_min=5)(continued).submit()
    assert handle.result(timeout=300) == "continued"
    assert writable(tmp_path / "runs", by=OTHERS) == []
    for name in ("job.json", "status.json", "events.jsonl", ".lock"):  # resilient's own: its owner's alone
        assert mode(run_dir / name) == 0o644, name
    folder = run_dir / "submitit"
    assert mode(folder) == 0o700
    (pickle,) = folder.glob("*_submitted.pkl")
    assert mode(pickle) == stat.S_IRUSR | stat.S_IWUSR
    for log in (handle.stdout(), handle.stderr()):  # neither submitit's INFO lines nor its "Bypassing" warnings
        assert "submitit" not in log, log
