"""The command line without running a job: help, schema, dry runs, and every mistake refused in one line.

Mistakes are run from an empty directory, which must stay empty: a refused command has done
nothing, not even created `runs/`.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from resilient.requeue._status import update_status
from resilient.rundir._record import JobRecord, write_record

from ._cli import ELSEWHERE, QUICKSTART, REPO, assert_usage_error, cli, cli_many

BROKEN = sorted((REPO / "tests" / "config" / "broken").glob("*.yaml"))
COMMANDS = ("submit", "status", "logs", "cancel", "checkpoints", "preempt", "schema")


def _header(path: Path, name: str) -> str:
    prefix = f"# {name}: "
    return next(line.removeprefix(prefix) for line in path.read_text().splitlines() if line.startswith(prefix))


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cwd"
    directory.mkdir()
    return directory


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A run directory whose one-task local job completed: its controller's pid is dead."""
    run_dir = tmp_path / "finished"
    run_dir.mkdir()
    ended = subprocess.Popen(["true"])
    ended.wait()
    write_record(run_dir, JobRecord(job_id=str(ended.pid), executor="local", name="finished", submitted=time.time(),
                                    host=socket.gethostname(), tasks=1, warning_signal=int(signal.SIGUSR2)))
    with update_status(run_dir) as status:
        status.job_id, status.state = str(ended.pid), "completed"
    return run_dir


def test_every_help_exits_0_with_examples() -> None:
    arguments = [("--help",), *((name, "--help") for name in COMMANDS)]
    for args, result in zip(arguments, cli_many(arguments), strict=True):
        assert result.returncode == 0, (args, result.stderr)
        assert "example" in result.stdout, (args, result.stdout)


def test_schema_is_json_that_requires_an_entrypoint() -> None:
    result = cli("schema")
    assert result.returncode == 0, result.stderr
    assert "entrypoint" in json.loads(result.stdout)["required"]


def test_every_broken_job_file_is_refused_in_one_line_and_submits_nothing(tmp_path: Path) -> None:
    """The corpus through the CLI; each file from a directory of its own that must stay as it was.

    Two files of the corpus use pyproject.toml as "a file that is in the way of run_dir", as it is
    in the repository; each directory holds a copy so that they mean the same here.
    """
    directories = []
    for path in BROKEN:
        directory = tmp_path / path.stem
        directory.mkdir()
        shutil.copy(REPO / "pyproject.toml", directory)
        directories.append(directory)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda pair: cli("submit", pair[0], cwd=pair[1], env=ELSEWHERE),
                                zip(BROKEN, directories, strict=True)))
    assert len(results) >= 30
    for path, directory, result in zip(BROKEN, directories, results, strict=True):
        line = assert_usage_error(result, says=_header(path, "says"))
        key = _header(path, "expect")
        if key != "-":
            assert f": {key}: " in line, (path.name, line)
        assert sorted(entry.name for entry in directory.iterdir()) == ["pyproject.toml"], path.name


def test_a_bad_command_line_is_refused_in_one_line(empty_dir: Path, finished_run: Path) -> None:
    """Mistakes resilient finds print one line; argparse's own print its usage above that line."""
    by_resilient: list[tuple[tuple[object, ...], str]] = [
        (("submit", "missing.yaml"), "missing.yaml: cannot read the job file"),
        (("status", "nosuchrun"), "no run directory 'nosuchrun'"),
        (("logs", finished_run, "--rank", "7"), "--rank 7"),
        (("preempt", finished_run), "is not running (it is completed)"),
        (("cancel", finished_run), "is not running (it is completed)"),
        (("checkpoints", "/nonexistent"), "/nonexistent: no such directory"),
    ]
    by_argparse: list[tuple[tuple[object, ...], str]] = [
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        (("submit",), "JOB.yaml"),
        (("submit", QUICKSTART, "--executor", "cloud"), "invalid choice: 'cloud'"),
    ]
    cases = by_resilient + by_argparse
    results = cli_many([args for args, _ in cases], cwd=empty_dir, env=ELSEWHERE)
    for (_, says), result in zip(cases, results, strict=True):
        assert_usage_error(result, says)
    assert not any(empty_dir.iterdir())
    assert not (finished_run / "events.jsonl").exists()  # no signal was sent, so none was recorded


def test_a_local_dry_run_prints_the_resolved_file_and_creates_nothing(empty_dir: Path) -> None:
    result = cli("submit", QUICKSTART, "--dry-run", "-o", "args.lr=0.1", cwd=empty_dir, env=ELSEWHERE)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["run_dir"] == str(empty_dir / "runs" / "quickstart")
    assert resolved["args"] == {"lr": 0.1, "epochs": 5, "step_seconds": 0.05}
    assert [rule["save_top_k"] for rule in resolved["checkpoint"]] == [2, 1]  # the default, filled in
    assert resolved["fire_drill"] == {"preempt_at_step": 30}
    assert not any(empty_dir.iterdir())


def test_a_slurm_dry_run_prints_the_batch_script_and_creates_nothing(empty_dir: Path) -> None:
    result = cli("submit", QUICKSTART, "--executor", "slurm", "--dry-run", "-o", "slurm.partition=low",
                 "-o", "slurm.signal_delay=90", cwd=empty_dir, env=ELSEWHERE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "#!/bin/bash"
    for option in ("--requeue", "--signal=USR2@90", "--partition=low", "--time=10", "--job-name=quickstart"):
        assert f"#SBATCH {option}" in lines, option
    assert not any(empty_dir.iterdir())
