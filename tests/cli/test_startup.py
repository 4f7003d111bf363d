"""The light commands start without torch or what submitting needs; the startup benchmark prints its table.

`resilient --help`, `status`, `report`, `logs`, `cancel` and `preempt` read the run directory and signal
processes, and `checkpoints` reads manifests and hashes files; importing torch would cost them
seconds, and submitit, yaml, pydantic and filelock, which only submitting needs, up to a tenth
of a second more (`benchmarks/cli_startup.py` measures it).
Each command runs, to success, inside one real `python -m resilient` process per test, which
then reports which of those modules it had imported by then. The job they steer is a stand-in
for submitit's local controller and its rank-0 task: two real processes, so no torch-loading
job is needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from resilient.checkpoint import write_checkpoint
from resilient.cli import main
from resilient.rundir import JobRecord, Sweep, SweepTask, update_status, write_record, write_sweep

from ._cli import BOUND_S, ELSEWHERE, REPO, in_one_process, wait_until

# What the light commands never import: torch, what only submitting and job files need, and the
# report's picture (matplotlib, for `report --png` alone).
_HEAVY = ("torch", "submitit", "yaml", "pydantic", "filelock", "matplotlib")
# submitit's local controller as `resilient.slurm` recognises it, with one task of rank 0 that
# survives the warning signal (as a job does: it checkpoints and goes on) and ends on SIGTERM.
_TASK = "import signal, sys, time; signal.signal(signal.SIGUSR2, signal.SIG_IGN); open(sys.argv[1], 'w').close(); time.sleep(600)"
_CONTROLLER = "import os, subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]], env=dict(os.environ, SUBMITIT_LOCAL_GLOBALID='0'))"


@pytest.fixture
def running_job(tmp_path: Path):
    """A run directory whose local job is running, until the test cancels it."""
    run_dir, ready = tmp_path / "runs" / "job", tmp_path / "task-ready"
    run_dir.mkdir(parents=True)
    controller = subprocess.Popen([sys.executable, "-c", _CONTROLLER, _TASK, str(ready), "submitit.local._local"])
    try:
        write_record(run_dir, JobRecord(job_id=str(controller.pid), executor="local", name="job", submitted=time.time(),
                                        host=socket.gethostname(), tasks=1, warning_signal=int(signal.SIGUSR2)))
        with update_status(run_dir) as status:
            status.job_id, status.state = str(controller.pid), "running"
        sweep = run_dir.parent / "grid"  # a sweep whose one task is the same job
        shutil.copytree(run_dir, sweep / "x=1")
        write_sweep(Sweep(sweep, "grid", "local", None, None, (SweepTask(0, "x=1", {"args.x": 1}, sweep / "x=1"),)))
        wait_until(ready.exists, "the task's ready file", unless=lambda: None if controller.poll() is None else "the controller ended")
        yield run_dir
    finally:
        controller.kill()
        controller.wait(timeout=BOUND_S)


def _run_in_one_process(*commands: tuple[str, ...], cwd: Path) -> list[dict]:
    results = in_one_process(list(commands), cwd=cwd, env=ELSEWHERE, watch=_HEAVY)
    for result in results:
        assert result["code"] is not None, result["stderr"]
    return results


def test_light_commands_import_neither_torch_nor_what_submitting_needs(running_job: Path) -> None:
    assert importlib.util.find_spec("torch") is not None  # the python that runs them could import it
    results = _run_in_one_process(
        ("--help",), ("--version",), ("status",), ("status", "job"), ("report", "job"), ("report", "job", "--json"),
        ("logs", "job"), ("preempt", "job"), ("status", "grid"), ("preempt", "grid"), ("cancel", "job"),
        ("submit", "--help"), cwd=running_job.parents[1],
    )
    for result in results:
        assert result["code"] == 0, result
        assert result["imported"] == [], f"`resilient {' '.join(result['argv'])}` imported {result['imported']}"
    said = {result["argv"][0] + " " + result["argv"][-1]: result["stdout"] + result["stderr"] for result in results}
    assert "running" in said["status job"] and "sent job" in said["preempt job"] and "cancelling" in said["cancel job"]
    assert "1 task: 1 running" in said["status grid"] and "sent job" in said["preempt grid"]


def test_listing_checkpoints_never_imports_torch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Sizes and checksums need no torch; the listing is what this process, torch loaded, prints."""
    checkpoints = tmp_path / "run" / "checkpoints"
    for step in (2, 4):
        write_checkpoint([(checkpoints / f"step={step}.ckpt", "manual")], {"state.pt": torch.ones(3)}, step=step,
                         epoch=0, metrics={"loss": 1 / step}, world_size=1)
    os.truncate(checkpoints / "step=2.ckpt" / "state.pt", 1)  # a damaged one: listed as invalid, exit code 1
    commands = [("checkpoints", "run"), ("checkpoints", "run", "--verify")]
    results = _run_in_one_process(*commands, cwd=tmp_path)
    for argv, result in zip(commands, results):
        assert "torch" not in result["imported"], f"`resilient {' '.join(argv)}` imported torch"
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp_path)
            code = main(argv)
        assert (result["code"], result["stdout"], result["stderr"]) == (code, *capsys.readouterr())
        assert code == 1 and "step=4.ckpt" in result["stdout"] and "NO: " in result["stdout"], result


def test_the_public_api_is_imported_on_first_use() -> None:
    """`import resilient` alone is light; reading `resilient.Run` imports what Run needs, and a
    subpackage is there to read, as when `__init__` imported everything."""
    probe = ("import sys, resilient; before = 'torch' in sys.modules; resilient.Run, resilient.submission.Job; "
             "print(before, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=ELSEWHERE, capture_output=True, text=True,
                            timeout=BOUND_S, check=True)
    assert result.stdout.split() == ["False", "True"]


def test_the_startup_benchmark_prints_its_table_and_writes_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        benchmark_script: Callable[[str], ModuleType]) -> None:
    """Its own command line, on made-up measurements: tests/test_benchmarks_all.py times the commands."""
    cli_startup = benchmark_script("cli_startup")
    seconds = {cli_startup.ANCHOR: 0.05, "resilient --help": 0.1, "resilient status": 0.2, "resilient logs": 0.4}
    calls = []
    monkeypatch.setattr(cli_startup, "_best", lambda *args, **kwargs: calls.append((args, kwargs)) or seconds)
    output = tmp_path / "startup.json"
    monkeypatch.setattr(sys, "argv", ["cli_startup.py", "--quick", "--json", str(output)])
    cli_startup.main()

    assert calls == [((3,), {"reference": False})]  # --quick: 3 rounds, no `import torch` reference
    table = capsys.readouterr().out
    assert "| resilient --help | 0.100 | 2.0x | yes |" in table, table
    assert "| resilient logs | 0.400 | 8.0x | NO |" in table, table
    rows = json.loads(output.read_text())["rows"]
    assert [(row["what"], row["ratio"], row["met"]) for row in rows] == [
        ("resilient --help", 2.0, True), ("resilient status", 4.0, True), ("resilient logs", 8.0, False)]
