"""`--fresh` moves only a run directory aside: one holding a run's records and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient.rules import ModelCheckpoint
from resilient.rundir._lock import RunDirError
from resilient.submission import JobOptions
from resilient.submission._launch import _set_aside, refuse_foreign_run_dir


def a_run(run_dir: Path) -> Path:
    """What a run that was submitted and checkpointed leaves behind."""
    (run_dir / "checkpoints" / "emergency").mkdir(parents=True)
    (run_dir / "submitit").mkdir()
    for name in ("config.yaml", "job.json", "status.json", "events.jsonl", ".lock", ".status.json.lock",
                 ".job.json.tmp-4242"):
        (run_dir / name).write_text("{}")
    return run_dir


def test_a_run_directory_is_moved_aside_whole(tmp_path: Path) -> None:
    run_dir = a_run(tmp_path / "run")
    before = sorted(path.name for path in run_dir.iterdir())
    aside = _set_aside(run_dir, JobOptions(run_dir=run_dir))
    assert aside is not None and aside.parent == tmp_path and aside.name.startswith("run.")
    assert not run_dir.exists() and sorted(path.name for path in aside.iterdir()) == before


def test_a_data_directory_is_never_moved(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n")
    (data / "job.json").write_text("{}")  # even beside a run's record
    with pytest.raises(RunDirError, match=r"data holds files that are not a run's \(train.csv\)"):
        _set_aside(data, JobOptions(run_dir=data))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]
    assert (data / "train.csv").read_text() == "x,y\n"


def test_a_directory_without_a_record_of_a_run_is_not_moved(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    with pytest.raises(RunDirError, match=r"holds checkpoints but no record of a run"):
        _set_aside(run_dir, JobOptions(run_dir=run_dir))
    assert run_dir.is_dir()


def test_nothing_to_move_in_a_new_or_empty_directory(tmp_path: Path) -> None:
    assert _set_aside(tmp_path / "new", JobOptions(run_dir=tmp_path / "new")) is None
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / ".lock").write_text("")
    assert _set_aside(tmp_path / "locked", JobOptions(run_dir=tmp_path / "locked")) is None


def test_where_the_rules_write_inside_the_run_directory_is_the_runs(tmp_path: Path) -> None:
    run_dir = a_run(tmp_path / "run")
    (run_dir / "best" / "x.ckpt").mkdir(parents=True)
    rules = [ModelCheckpoint(dirpath=run_dir / "best" / "sub", monitor="loss"), ModelCheckpoint(dirpath=run_dir)]
    (run_dir / "step=3.ckpt").mkdir()
    (run_dir / ".step=4.ckpt.tmp-0123456789ab").mkdir()
    refuse_foreign_run_dir(run_dir, rules)
    with pytest.raises(RunDirError, match=r"\(.step=4.ckpt.tmp-0123456789ab, best, step=3.ckpt\)"):
        refuse_foreign_run_dir(run_dir, None)
    (run_dir / "notes.txt").write_text("")
    (run_dir / ".hidden").write_text("")
    (run_dir / "z").mkdir()
    with pytest.raises(RunDirError, match=r"\(.hidden, notes.txt, z\)"):
        refuse_foreign_run_dir(run_dir, rules)
    (run_dir / "zz").mkdir()
    with pytest.raises(RunDirError, match=r"\(.hidden, notes.txt, z and 1 more\)"):
        refuse_foreign_run_dir(run_dir, rules)
