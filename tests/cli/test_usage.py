"""The command line without running a job: help, schema, dry runs, and every mistake refused in one line.

Mistakes are run from an empty directory, which must stay empty: a refused command has done
nothing, not even created `runs/`. Damaged run directories are made by hand, a file at a time.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from resilient.cli import main
from resilient.rundir import JobRecord, append_event, update_status, write_record

from ._cli import (
    ELSEWHERE,
    QUICKSTART,
    REPO,
    assert_usage_error,
    cli,
    cli_many,
    without_slurm,
)

BROKEN = sorted((REPO / "tests" / "config" / "broken").glob("*.yaml"))
COMMANDS = ("submit", "status", "logs", "cancel", "checkpoints", "preempt", "schema", "export")


def _header(path: Path, name: str) -> str:
    prefix = f"# {name}: "
    return next(line.removeprefix(prefix) for line in path.read_text().splitlines() if line.startswith(prefix))


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cwd"
    directory.mkdir()
    return directory


def _finished(run_dir: Path, message: str = "") -> Path:
    """A run directory whose one-task local job completed: its controller's pid is dead."""
    run_dir.mkdir(parents=True)
    ended = subprocess.Popen(["true"])
    ended.wait()
    write_record(run_dir, JobRecord(job_id=str(ended.pid), executor="local", name=run_dir.name, submitted=time.time(),
                                    host=socket.gethostname(), tasks=1, warning_signal=int(signal.SIGUSR2)))
    with update_status(run_dir) as status:
        status.job_id, status.state, status.message = str(ended.pid), "completed", message
    return run_dir


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    return _finished(tmp_path / "finished")


@pytest.fixture
def no_slurm(tmp_path: Path) -> dict[str, str]:
    return without_slurm(tmp_path / "bin")


def test_every_help_exits_0_with_examples() -> None:
    arguments = [("--help",), *((name, "--help") for name in COMMANDS)]
    for args, result in zip(arguments, cli_many(arguments), strict=True):
        assert result.returncode == 0, (args, result.stderr)
        assert "example" in result.stdout, (args, result.stdout)


def test_schema_is_json_that_requires_an_entrypoint() -> None:
    result = cli("schema")
    assert result.returncode == 0, result.stderr
    assert "entrypoint" in json.loads(result.stdout)["required"]


def test_the_broken_corpus_is_large():
    assert len(BROKEN) >= 30


def _own_directory(tmp_path: Path, path: Path) -> Path:
    """The directory a broken file is submitted from, holding a copy of pyproject.toml.

    Two files of the corpus use pyproject.toml as "a file that is in the way of run_dir", as it is
    in the repository; each directory holds a copy so that they mean the same here.
    """
    directory = tmp_path / path.stem
    directory.mkdir()
    shutil.copy(REPO / "pyproject.toml", directory)
    return directory


def _assert_refused(path: Path, directory: Path, result: subprocess.CompletedProcess[str]) -> None:
    """Exit 2, one line naming the file's key and saying what its header says; the directory as it was."""
    line = assert_usage_error(result, says=_header(path, "says"))
    key = _header(path, "expect")
    if key != "-":
        assert f": {key}: " in line, (path.name, line)
    assert sorted(entry.name for entry in directory.iterdir()) == ["pyproject.toml"], path.name


def test_every_broken_job_file_is_refused_in_one_line_and_submits_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """The corpus through the command's `main`, in this process, each file from a directory of its own.

    `launch` is replaced by a recorder: a file that got through would be recorded instead of
    starting a job beside the test. The real command, as its own process, is the next test's.
    """
    launched: list[object] = []
    monkeypatch.setattr("resilient.submission.launch", lambda *args, **kwargs: launched.append(args))
    monkeypatch.setattr(sys, "path", [str(REPO), *sys.path])  # submitting puts the current directory first
    for path in BROKEN:
        directory = _own_directory(tmp_path, path)
        monkeypatch.chdir(directory)
        code = main(["submit", str(path)])
        out, err = capfd.readouterr()
        _assert_refused(path, directory, subprocess.CompletedProcess(["resilient", "submit", path], code, out, err))
    assert not launched


# Through the real command, as a process: files refused while parsing 5000 levels of brackets (the
# interpreter's own stack, not pytest's), while importing an entrypoint that raises KeyboardInterrupt,
# and after resolving run_dir against the current directory.
_IN_A_PROCESS = ("yaml_nested_5000_deep", "entrypoint_interrupted_on_import", "run_dir_is_a_file")


def test_the_command_refuses_broken_files_with_exit_code_2_and_one_line_on_stderr(tmp_path: Path) -> None:
    paths = [path for path in BROKEN if path.stem in _IN_A_PROCESS]
    assert len(paths) == len(_IN_A_PROCESS)
    directories = [_own_directory(tmp_path, path) for path in paths]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda path, directory: cli("submit", path, cwd=directory, env=ELSEWHERE),
                                paths, directories))
    for path, directory, result in zip(paths, directories, results, strict=True):
        _assert_refused(path, directory, result)


def test_a_bad_command_line_is_refused_in_one_line(empty_dir: Path, finished_run: Path) -> None:
    """Mistakes resilient finds print one line; argparse's own print its usage above that line."""
    by_resilient: list[tuple[tuple[object, ...], str]] = [
        (("submit", "missing.yaml"), "missing.yaml: cannot read the job file"),
        (("status", "nosuchrun"), "no run directory 'nosuchrun'"),
        (("logs", finished_run, "--rank", "7"), "--rank 7"),
        (("preempt", finished_run), "is not running (it is completed)"),
        (("cancel", finished_run), "is not running (it is completed)"),
        (("checkpoints", "/nonexistent"), "/nonexistent: no such directory"),
        (("export", "/nonexistent", "out.pt"), "/nonexistent: no such checkpoint or directory"),
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


def test_a_slurm_dry_run_prints_the_batch_script_and_creates_nothing(empty_dir: Path, no_slurm: dict) -> None:
    """Without SLURM on this machine: a dry run is for checking a job file before taking it to the cluster."""
    result = cli("submit", QUICKSTART, "--executor", "slurm", "--dry-run", "-o", "slurm.partition=low",
                 "-o", "slurm.signal_delay=90", cwd=empty_dir, env=no_slurm)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "#!/bin/bash"
    for option in ("--requeue", "--signal=USR2@90", "--partition=low", "--time=10", "--job-name=quickstart"):
        assert f"#SBATCH {option}" in lines, option
    assert not any(empty_dir.iterdir())


def test_a_slurm_submission_without_slurm_is_one_line_and_leaves_nothing(
        empty_dir: Path, finished_run: Path, no_slurm: dict) -> None:
    before = sorted(finished_run.rglob("*"))
    results = cli_many([("submit", QUICKSTART, "--executor", "slurm"),
                        ("submit", QUICKSTART, "--executor", "slurm", "-o", f"run_dir={finished_run}")],
                       cwd=empty_dir, env=no_slurm)
    for result in results:
        assert_usage_error(result, "SLURM is not available here (no sbatch or srun on PATH); "
                                   "use --executor local or --dry-run")
    assert not any(empty_dir.iterdir())
    assert sorted(finished_run.rglob("*")) == before


def test_a_missing_run_given_by_its_absolute_path_is_named_plainly(empty_dir: Path) -> None:
    missing = empty_dir / "nowhere"
    assert_usage_error(cli("status", missing, cwd=empty_dir, env=ELSEWHERE),
                       f"no run directory '{missing}' (looked for job.json, status.json or sweep.json in {missing})")


# ---------------------------------------------------------------- damaged run directories

_DAMAGE: dict[str, tuple[str, bytes, str]] = {  # run name: file, what it holds, what the row says
    "utf8": ("events.jsonl", b'{"time": "\xff", "event": "started"}\n', "line 2: byte 0xff is not UTF-8"),
    "time": ("events.jsonl", b'{"time": "05:75:14", "event": "started"}\n', "line 2: time '05:75:14'"),
    "step": ("events.jsonl", b'{"time": "2026-12-01T05:00:00", "event": "checkpoint", "step": [1]}\n',
                 "'step' is [1], not int"),
    "status": ("status.json", b"\x00\x01garbage", "not JSON"),
    "state": ("status.json", b'{"state": 5}', "'state' is 5, not str"),
    "sizes": ("status.json", b'{"world_sizes": [2, 0]}', "world_sizes [2, 0] are not"),
    "job": ("job.json", b"{\"job_id\": ", "not JSON"),
    "record": ("job.json", b'{"job_id": 1}', "no 'executor'"),
}


@pytest.fixture
def runs(empty_dir: Path) -> Path:
    """./runs with a sound finished run and one run for each kind of damage."""
    _finished(empty_dir / "runs" / "sound")
    for name, (file, content, _) in _DAMAGE.items():
        run_dir = _finished(empty_dir / "runs" / name)
        append_event(run_dir, "finished", step=4)
        if file == "events.jsonl":
            with open(run_dir / file, "ab") as events:
                events.write(content)
        else:
            (run_dir / file).write_bytes(content)
    return empty_dir / "runs"


def test_status_lists_every_run_and_names_each_damage_in_its_row(runs: Path) -> None:
    result = cli("status", cwd=runs.parent, env=ELSEWHERE)
    assert result.returncode == 1 and "Traceback" not in result.stderr and not result.stderr, result.stderr
    rows = {line.split()[0].removeprefix("runs/"): line for line in result.stdout.splitlines()[1:]}
    assert sorted(rows) == sorted([*_DAMAGE, "sound"])
    assert "completed" in rows["sound"] and "damaged" not in rows["sound"]
    for name, (file, _, says) in _DAMAGE.items():  # the why's start: the last column fits what is left of 119
        assert "  damaged  " in rows[name] and f"  {file}: " in rows[name] and says[:12] in rows[name], rows[name]


def test_status_of_one_damaged_run_shows_it_and_exits_1(runs: Path) -> None:
    result = cli("status", "state", cwd=runs.parent, env=ELSEWHERE)
    assert result.returncode == 1 and not result.stderr, result.stderr
    assert "damaged" in result.stdout.splitlines()[1]
    assert f"{runs / 'state' / 'status.json'} is damaged: 'state' is 5, not str" in result.stdout  # the whole story


def test_commands_on_a_damaged_run_say_so_in_one_line(runs: Path) -> None:
    cases = [(command, name) for command in ("logs", "cancel", "preempt") for name in ("job", "record")]
    cases += [("cancel", "state"), ("preempt", "status")]
    for (command, name), result in zip(cases, cli_many(cases, cwd=runs.parent, env=ELSEWHERE), strict=True):
        file = _DAMAGE[name][0]
        assert_usage_error(result, f"{runs / name / file} is damaged: ", code=1)
    for name, (file, content, _) in _DAMAGE.items():
        if file != "events.jsonl":
            assert (runs / name / file).read_bytes() == content  # nothing was done to the damaged run


def test_status_rows_fit_120_columns(tmp_path: Path) -> None:
    run_dir = _finished(tmp_path / ("a-run-directory-with-a-name-longer-than-anyone-would-like-to-read" * 2))
    append_event(run_dir, "checkpoint", step=12, path=str(run_dir / "checkpoints" / f"{'x' * 150}.ckpt"), bytes=1,
                 seconds=0.1)
    append_event(run_dir, "failed", message="crashed: RuntimeError: " + "boom " * 60)
    result = cli("status", run_dir, cwd=tmp_path, env=ELSEWHERE)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert len(header) < 120 and len(row) < 120, result.stdout
    assert row.startswith("...") and "-to-read  " in row and row.endswith("..."), row  # the run's name is kept
    assert "failed: c" in row and "step 12 xxx" in row, row  # the last event keeps its start


def test_status_names_paths_in_the_run_from_the_run(tmp_path: Path) -> None:
    run_dir = _finished(tmp_path / "run")
    append_event(run_dir, "cancelled", message=f"cancelled: emergency checkpoint {run_dir}/checkpoints/emergency/s.ckpt")
    result = cli("status", run_dir, cwd=tmp_path, env=ELSEWHERE)
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1]
    assert "cancelled: emergency checkpoint c" in row and str(tmp_path) not in row, row  # c, not /


def test_status_of_a_run_shows_the_world_size_of_each_start(tmp_path: Path) -> None:
    run_dir = _finished(tmp_path / "run")
    with update_status(run_dir) as status:
        status.world_sizes = [2, 1]
    append_event(run_dir, "started", job_id="4711", host="slurm", restarts=1, world_size=1)
    result = cli("status", run_dir, cwd=tmp_path, env=ELSEWHERE)
    assert result.returncode == 0, result.stderr
    assert "started job 4711 on 1 rank (restart 1)" in result.stdout.splitlines()[1], result.stdout
    assert result.stdout.splitlines()[-1] == "world size at each start: 2, 1", result.stdout
