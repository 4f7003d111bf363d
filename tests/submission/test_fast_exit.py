"""A task whose Run stopped at a boundary leaves at once, having done what an exit must do.

Under submitit's local executor, the task stops once (its warning signal), requeues and comes
back to complete. The stopped start must skip the interpreter's teardown (a module-level
object is never finalized) yet run its atexit handlers, wait for its non-daemon thread and
flush what it printed; the completing start, which returns to submitit, tears down as usual.
`benchmarks/stop_to_exit.py` measures what this saves; here it runs once on a tiny state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import resilient

from .exit_jobs import stop_once

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def test_a_stopped_task_leaves_without_teardown_but_runs_what_an_exit_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rules = [resilient.ModelCheckpoint(every_n_train_steps=4, filename="{step}")]
    handle = resilient.job(checkpoint=rules, run_dir=tmp_path / "run", timeout_min=5)(stop_once).submit(
        out_dir=str(out))
    completed = handle.result(timeout=300)

    assert handle.status.requeues == {"preempted": 1}
    (stopped,) = {int(path.stem) for path in out.glob("*.teardown")} - {completed}
    log = handle.stdout(0)
    for pid in (stopped, completed):
        assert (out / f"{pid}.atexit").exists() and (out / f"{pid}.thread").exists(), pid
        assert f"left the loop in {pid}" in log, log
    assert (out / f"{stopped}.teardown").read_bytes() == b""  # it left without finalizing anything
    assert (out / f"{completed}.teardown").read_bytes() == b"finalized"  # what teardown does, where it happens


def test_the_stop_to_exit_benchmark_prints_its_table_and_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "stop.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "stop_to_exit.py"), "--quick", "--dir",
                             str(tmp_path), "--json", str(output)], cwd=tmp_path, env=ENV, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "| resilient, a submitted task (fast exit) |" in result.stdout, result.stdout
    rows = json.loads(output.read_text())["rows"]
    assert len(rows) == 2 and all(row["resilient"] > 0 and row["ratio"] > 0 for row in rows)
