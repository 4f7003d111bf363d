"""A task whose Run stopped at a boundary leaves at once, having done what an exit must do.

Under submitit's local executor, the task stops once (its warning signal), requeues and comes
back to complete. The stopped start must skip the interpreter's teardown (a module-level
object is never finalized) yet run its atexit handlers, wait for its non-daemon thread and
flush what it printed; the completing start, which returns to submitit, tears down as usual.
`benchmarks/stop_to_exit.py` measures what this saves; tests/test_benchmarks_all.py measures its
rows on a tiny state, and here its own command line prints and writes made-up measurements.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import resilient

from .exit_jobs import stop_once


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


def test_the_stop_to_exit_benchmark_prints_its_table_and_writes_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        benchmark_script: Callable[[str], ModuleType]) -> None:
    stop_to_exit = benchmark_script("stop_to_exit")
    seconds = {stop_to_exit.ANCHOR: 0.5, stop_to_exit.TASK: 0.25, stop_to_exit.PLAIN: 1.5}
    measured = []
    monkeypatch.setattr(stop_to_exit, "_best", lambda *args: measured.append(args) or seconds)
    output = tmp_path / "stop.json"
    monkeypatch.setattr(sys, "argv", ["stop_to_exit.py", "--quick", "--dir", str(tmp_path), "--json", str(output)])
    stop_to_exit.main()

    assert measured == [(stop_to_exit.LAYER_MIB, str(tmp_path), 3)]  # --quick: one layer, the default rounds
    table = capsys.readouterr().out
    assert "| resilient, a submitted task (fast exit) | 0.250 | 0.50x |" in table, table
    assert "| resilient, the user's own process (teardown) | 1.500 | 3.00x |" in table, table
    rows = json.loads(output.read_text())["rows"]
    assert [(row["what"], row["resilient"], row["ratio"]) for row in rows] == [
        (stop_to_exit.TASK, 0.25, 0.5), (stop_to_exit.PLAIN, 1.5, 3.0)]
