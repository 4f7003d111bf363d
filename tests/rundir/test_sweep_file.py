"""sweep.json: the task table written whole, read back the same, and named when damaged."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from resilient.rundir import (
    SWEEP_FILE,
    DamagedFile,
    JobRecord,
    Sweep,
    SweepTask,
    read_record,
    read_sweep,
    write_record,
    write_sweep,
)


def _sweep(path: Path) -> Sweep:
    return Sweep(path, "grid", "slurm", "812", 2, (
        SweepTask(0, "lr=0.1,seed=0", {"args.lr": 0.1, "args.seed": 0}, path / "lr=0.1,seed=0"),
        SweepTask(1, "lr=0.1,seed=1", {"args.lr": 0.1, "args.seed": 1}, path / "lr=0.1,seed=1"),
    ))


def test_the_table_reads_back_as_written(tmp_path: Path) -> None:
    assert read_sweep(tmp_path) is None
    write_sweep(_sweep(tmp_path))
    assert read_sweep(tmp_path) == _sweep(tmp_path)
    assert [entry.name for entry in tmp_path.iterdir()] == [SWEEP_FILE]  # no temporary left


def _written(tmp_path: Path) -> dict:
    write_sweep(_sweep(tmp_path))
    return json.loads((tmp_path / SWEEP_FILE).read_text())


@pytest.mark.parametrize("damage, says", [
    (lambda raw: raw.pop("tasks"), "no 'tasks'"),
    (lambda raw: raw.update(executor="pbs"), "executor 'pbs' is none of local, slurm, debug"),
    (lambda raw: raw.update(job_id=812), "'job_id' is 812, not str or null"),
    (lambda raw: raw.update(tasks=[]), "it lists no task"),
    (lambda raw: raw["tasks"].append(7), "task 2 is not an object"),
    (lambda raw: raw["tasks"][1].update(index=0), "task 1: index 0 where 1 was expected"),
    (lambda raw: raw["tasks"][1].update(dir="../elsewhere"), "task 1: dir '../elsewhere' is not a directory name"),
    (lambda raw: raw["tasks"][1].update(dir=".."), "task 1: dir '..' is not a directory name"),
    (lambda raw: raw["tasks"][1].update(dir="lr=0.1,seed=0"), "task 1: dir 'lr=0.1,seed=0' appears twice"),
    (lambda raw: raw["tasks"][0].pop("overrides"), "task 0: no 'overrides'"),
])
def test_a_damaged_table_is_named_with_what_is_wrong(tmp_path: Path, damage, says: str) -> None:
    raw = _written(tmp_path)
    damage(raw)
    (tmp_path / SWEEP_FILE).write_text(json.dumps(raw))
    with pytest.raises(DamagedFile) as error:
        read_sweep(tmp_path)
    assert str(error.value) == f"{tmp_path / SWEEP_FILE} is damaged: {says}; submitting the job file again rewrites it"


def test_a_table_that_is_not_json_is_damaged(tmp_path: Path) -> None:
    (tmp_path / SWEEP_FILE).write_bytes(b"\xff{")
    with pytest.raises(DamagedFile, match="not JSON"):
        read_sweep(tmp_path)


def test_an_array_tasks_logs_are_in_its_sweeps_folder_and_older_records_still_read(tmp_path: Path) -> None:
    task = tmp_path / "lr=0.1"
    task.mkdir()
    record = JobRecord("812_0", "slurm", "grid", 1.0, "h", 1, int(signal.SIGUSR2), shared_submitit=True)
    write_record(task, record)
    assert read_record(task) == record and record.submitit_folder(task) == tmp_path / "submitit"
    raw = json.loads((task / "job.json").read_text())
    del raw["shared_submitit"]  # as written before sweeps existed
    (task / "job.json").write_text(json.dumps(raw))
    assert read_record(task).submitit_folder(task) == task / "submitit"
