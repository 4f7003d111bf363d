"""What every fault-injection test shares: the knobs, the tally, the job process, the audit.

The knobs are environment variables, read once per session:

- RESILIENT_FAULT_TRIALS: how many kill trials (default 12, the CI sample; 300 or more is the
  long run, see tests/faults/README.md);
- RESILIENT_FAULT_SEED: the seed every random choice derives from. Unset, a fresh one is drawn
  and printed with every failure and in the summary line, so any run can be replayed.

The tally counts trials, faults injected and bad loads (a checkpoint that loaded but does not
hold the state of its step) over the session; conftest.py prints it at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import resilient
import resilient.cli

from . import _payload

TRIALS = int(os.environ.get("RESILIENT_FAULT_TRIALS") or 12)
SEED = int(os.environ.get("RESILIENT_FAULT_SEED") or random.SystemRandom().randrange(1_000_000))
REPO = Path(__file__).resolve().parents[2]
JOB = Path(__file__).parent / "scripts" / "job.py"
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
# A bound on any one process, so that a hang fails its test instead of stalling the suite; never
# a synchronisation.
BOUND_S = 120
EXIT_STOPPED = 75


def replay(test: str) -> str:
    return f"replay: RESILIENT_FAULT_SEED={SEED} RESILIENT_FAULT_TRIALS={TRIALS} python -m pytest {test}"


class Tally:
    """Trials, faults injected (by kind) and bad loads over the session; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kill_trials = 0
        self.faults: Counter[str] = Counter()
        self.bad_loads = 0

    def add(self, *, trials: int = 0, fault: str | None = None, bad_loads: int = 0) -> None:
        with self._lock:
            self.kill_trials += trials
            if fault:
                self.faults[fault] += 1
            self.bad_loads += bad_loads

    def counts(self) -> dict[str, Any]:
        """The tally as plain data: what a pytest-xdist worker hands the controller."""
        with self._lock:
            return {"kill_trials": self.kill_trials, "faults": dict(self.faults), "bad_loads": self.bad_loads}

    def merge(self, counts: dict[str, Any]) -> None:
        with self._lock:
            self.kill_trials += counts["kill_trials"]
            self.faults.update(counts["faults"])
            self.bad_loads += counts["bad_loads"]

    def summary(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.faults.items()))
        return (f"faults: {self.kill_trials} kill trials, {sum(self.faults.values())} faults injected"
                f"{f' ({kinds})' if kinds else ''}, {self.bad_loads} bad loads (seed {SEED})")


TALLY = Tally()


def job_command(run_dir: Path, **options: Any) -> list[str]:
    """The fault job's command line; `kill_op=3` becomes `--kill-op 3`, `report_only=True` `--report-only`."""
    command = [sys.executable, str(JOB), "--run-dir", str(run_dir)]
    for name, value in options.items():
        if value is None or value is False:
            continue
        command.append("--" + name.replace("_", "-"))
        if value is not True:
            command.append(str(value))
    return command


class Child:
    """A job process whose JSON lines on stdout are events the test can wait for."""

    def __init__(self, command: list[str], **popen: Any) -> None:
        self.process = subprocess.Popen(command, env=popen.pop("env", ENV), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, **popen)
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    def wait_for(self, event: str, **fields: Any) -> dict[str, Any] | None:
        """The next line of kind `event` (matching `fields`); None if the process ended first."""
        while True:
            try:
                line = self._lines.get(timeout=BOUND_S)
            except queue.Empty:
                self.process.kill()
                raise AssertionError(f"no {event} line within {BOUND_S} s: the job hangs") from None
            if line is None:
                self._lines.put(None)  # later calls see the end too
                return None
            self.events.append(line)
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                return line

    def finish(self) -> int:
        """Wait for the end (killing a hung job after BOUND_S); the exit code."""
        try:
            self.process.wait(timeout=BOUND_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._stderr.append(f"\n[the test killed the job: still running after {BOUND_S} s]\n")
        for reader in self._readers:
            reader.join()
        while (line := self._lines.get_nowait()) is not None:
            self.events.append(line)
        return self.process.returncode

    def event(self, kind: str) -> dict[str, Any] | None:
        return next((line for line in self.events if line.get("event") == kind), None)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)


def events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's events.jsonl, oldest first (a line still being written, or torn by a kill, is left out)."""
    path = run_dir / "events.jsonl"
    parsed = []
    for line in path.read_text(errors="replace").splitlines(keepends=True) if path.exists() else []:
        with contextlib.suppress(ValueError):
            if line.endswith("\n"):
                parsed.append(json.loads(line))
    return parsed


def poll(condition: Callable[[], Any], what: str, process: subprocess.Popen[str]) -> Any:
    """Wait, polling, for something a process leaves on disk; only where it announces nothing."""
    deadline = time.monotonic() + BOUND_S
    while not (value := condition()):
        if process.poll() is not None:
            raise AssertionError(f"the job ended (exit code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {BOUND_S} s")
        time.sleep(0.02)
    return value


@dataclass
class Audit:
    """Every `*.ckpt` entry of some directories, loaded as a user would load it."""

    valid: dict[str, int] = field(default_factory=dict)  # path -> step
    invalid: dict[str, str] = field(default_factory=dict)  # path -> why it does not load
    bad: dict[str, str] = field(default_factory=dict)  # path -> what is wrong with what it loaded

    @property
    def newest_step(self) -> int | None:
        return max(self.valid.values(), default=None)


def audit(directories: list[Path], kib: int, grow_kib: int = 0) -> Audit:
    """Load every visible checkpoint with `resilient.load_checkpoint` and check what it holds."""
    result = Audit()
    for directory in directories:
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith(".") or not entry.name.endswith(".ckpt"):
                continue
            try:
                loaded = resilient.load_checkpoint(entry)
            except resilient.CheckpointError as error:
                result.invalid[str(entry)] = str(error)
                continue
            problem = _payload.checkpoint_problem(loaded, kib, grow_kib)
            if problem:
                result.bad[str(entry)] = problem
            else:
                result.valid[str(entry)] = loaded["resilient"]["step"]
    return result


_CLI = threading.Lock()  # the command prints to sys.stdout, which threads share


def verify_in_process(directory: Path) -> tuple[int, str]:
    """`resilient checkpoints DIR --verify` through the command's own entry point: exit code, output."""
    out = io.StringIO()
    with _CLI, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = resilient.cli.main(["checkpoints", str(directory), "--verify"])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue()


def verify_command(directory: Path) -> subprocess.CompletedProcess[str]:
    """`python -m resilient checkpoints DIR --verify` as a process, bounded (a hang fails, it does not block)."""
    try:
        return subprocess.run([sys.executable, "-m", "resilient", "checkpoints", str(directory), "--verify"],
                              env=ENV, capture_output=True, text=True, timeout=BOUND_S / 2, check=False)
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(error.cmd, -9, "", f"hung: no exit within {error.timeout} s")
