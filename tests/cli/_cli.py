"""Driving `python -m resilient` as users do: real processes, job files, and waiting on what jobs leave.

Every command runs as its own process with the repository as the current directory, because a
job file's entrypoint is imported from there (the tests' jobs live in `tests.submission.jobs`).
Jobs report progress through files (gate files, `events.jsonl`), so tests wait for those to
appear, with a deadline, instead of sleeping for a guessed time.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
# A bound on any one command or wait, so that a hung job fails the test instead of the suite;
# never a synchronisation.
BOUND_S = 240
# One thread per torch process: tests run CLI processes and jobs side by side on two cores.
ENV = dict(os.environ, OMP_NUM_THREADS="1")
# For commands run from another directory: the repository's modules still import.
ELSEWHERE = dict(ENV, PYTHONPATH=str(REPO))

T = TypeVar("T")


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "resilient", *map(str, args)]


def cli(*args: object, cwd: Path = REPO, env: dict[str, str] | None = None,
        umask: int = -1) -> subprocess.CompletedProcess[str]:
    """Run one `resilient` command to its end (with `umask`, if given, instead of this process's)."""
    return subprocess.run(command(*args), cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=BOUND_S,
                          check=False, umask=umask)


def cli_many(arguments: list[tuple[object, ...]], cwd: Path = REPO,
             env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess[str]]:
    """Run several commands, two at a time (each spends most of a second importing torch)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda args: cli(*args, cwd=cwd, env=env), arguments))


# Runs each command line of argv[2] (JSON) as `python -m resilient` would, one after another in
# this one process, and prints one JSON line for each as it ends, naming which of argv[1]'s modules
# had been imported by then.
_IN_ONE_PROCESS = """
import contextlib, io, json, runpy, sys
watched = json.loads(sys.argv[1])
for argv in json.loads(sys.argv[2]):
    sys.argv = ["resilient", *argv]
    stdout, stderr, code = io.StringIO(), io.StringIO(), None
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            runpy.run_module("resilient", run_name="__main__")
        except SystemExit as exit:
            code = exit.code
    print(json.dumps({"argv": argv, "code": code, "imported": [name for name in watched if name in sys.modules],
                      "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}), flush=True)
"""


def in_one_process(commands: list[tuple[object, ...]], cwd: Path = REPO, env: dict[str, str] | None = None,
                   timeout: float = BOUND_S, watch: tuple[str, ...] = (), **popen: Any) -> list[dict[str, Any]]:
    """Each command run to its end as `python -m resilient` runs it, all in one process (which imports
    torch once, not once a command): its argv, exit code, stdout, stderr, and which modules of
    `watch` had been imported by then. A command that hangs past `timeout` or takes the process
    down gets the process's stderr as its own; those after it, that they were never run.
    """
    arguments = [[str(arg) for arg in args] for args in commands]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([sys.executable, "-c", _IN_ONE_PROCESS, json.dumps(watch), json.dumps(arguments)], cwd=cwd,
                                   env=env or ENV, stdout=stdout, stderr=stderr, text=True, **popen)
        try:
            process.wait(timeout=timeout)
            ended = f"the process ended with {process.returncode}"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            ended = f"HUNG: no end within {timeout} s"
        stdout.seek(0)
        stderr.seek(0)
        results = [json.loads(line) for line in stdout.read().splitlines() if line.startswith('{"argv": ')]
        if len(results) < len(arguments):
            results.append({"argv": arguments[len(results)], "code": None, "imported": None, "stdout": "",
                            "stderr": f"{ended} while this command ran: {stderr.read()[-3000:]}"})
        results += [{"argv": argv, "code": None, "imported": None, "stdout": "",
                     "stderr": "never run: an earlier command ended the process"} for argv in arguments[len(results):]]
    return results


def without_slurm(directory: Path) -> dict[str, str]:
    """ELSEWHERE, with a PATH of `directory` holding python alone: no sbatch, srun, squeue or scontrol.

    The SLURM tests install SLURM on this machine; a test of life without it must not depend on
    whether they ran first.
    """
    directory.mkdir(exist_ok=True)
    (directory / "python").symlink_to(sys.executable)
    return dict(ELSEWHERE, PATH=str(directory))


def assert_usage_error(result: subprocess.CompletedProcess[str], says: str = "", *, code: int = 2) -> str:
    """Exit 2 (or `code`) and one line `resilient: error: ...` on stderr, no traceback; returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("resilient: error: "), result.stderr
    assert says in lines[0], lines[0]
    return lines[0]


def wait_until(condition: Callable[[], T], what: str, *, unless: Callable[[], str | None] = lambda: None) -> T:
    """Poll `condition` until it returns something true; fail if `unless` says why it never will."""
    deadline = time.monotonic() + BOUND_S
    while not (value := condition()):
        reason = unless()
        if reason is not None:
            raise AssertionError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {BOUND_S} s")
        time.sleep(0.05)
    return value


def events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's events.jsonl, oldest first (a line still being written is left out)."""
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def story(run_dir: Path) -> list[dict[str, Any]]:
    """The run's events without the periodic checkpoints and each start's first step: what happened to the job."""
    return [event for event in events(run_dir) if event["event"] != "first_step"
            and (event["event"] != "checkpoint" or event["rule"]["kind"] == "emergency")]


def train_model_file(directory: Path, name: str = "train_model", **args: Any) -> Path:
    """A job file for `tests.submission.jobs:train_model`, a checkpoint every 4 of its 16 steps per epoch."""
    spec = {
        "name": name,
        "entrypoint": "tests.submission.jobs:train_model",
        "args": args,
        "resources": {"time": 5},
        "checkpoint": {"every_n_train_steps": 4, "filename": "{step}"},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class Follower:
    """`resilient submit ... --follow` running in the background, while the test steers the job.

    Its output goes to files, not pipes: nobody reads a pipe while the test waits at a gate, and
    a full one would stall the command.
    """

    def __init__(self, *args: object) -> None:
        self._stdout, self._stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(command("submit", *args, "--follow"), cwd=REPO, env=ENV,
                                        stdout=self._stdout, stderr=self._stderr, text=True)

    def ended(self) -> str | None:
        """Why the job cannot reach what a test waits for: `--follow` returned (None: it runs)."""
        if self.process.poll() is None:
            return None
        self._stderr.seek(0)
        return f"submit --follow exited with {self.process.returncode}: {self._stderr.read()[-2000:]}"

    def wait_for(self, path: Path) -> None:
        wait_until(path.exists, str(path), unless=self.ended)

    def finish(self) -> subprocess.CompletedProcess[str]:
        """Wait for the job to end, as `--follow` does; its exit code and output."""
        self.process.wait(timeout=BOUND_S)
        output = []
        for file in (self._stdout, self._stderr):
            file.seek(0)
            output.append(file.read())
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, *output)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stdout.close()
        self._stderr.close()


def kill_jobs(root: Path) -> None:
    """Kill every local job still alive whose job.json lies under `root`: its controller and tasks.

    A test that fails half-way must not leave a job training on the suite's two cores.
    """
    for record in root.rglob("job.json"):
        try:
            controller = psutil.Process(int(json.loads(record.read_text())["job_id"]))
            if "submitit.local._local" not in " ".join(controller.cmdline()):
                continue  # the job ended and its pid was reused
            processes = [controller, *controller.children(recursive=True)]
        except (psutil.Error, ValueError, KeyError):
            continue
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        wait_until(functools.partial(_all_ended, processes), f"the end of job {controller.pid}")


def _all_ended(processes: list[psutil.Process]) -> bool:
    """Gone or zombies: a killed task's new parent may be a reaper that never comes."""
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True
