"""benchmarks/step_overhead.py's own command line: its table and JSON, on made-up measurements.

tests/test_benchmarks_all.py measures its rows for real, one process and two gloo ranks on tiny
sizes (`--quick`), with every other benchmark's. No timing is asserted anywhere: the numbers are
read from a full run, in the README.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_the_step_overhead_benchmark_prints_its_table_and_writes_its_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        benchmark_script: Callable[[str], ModuleType]) -> None:
    step_overhead = benchmark_script("step_overhead")
    measured = [step_overhead._row("1 process, list, 2 step rules", 2000, 4.0, 5.0, at_most=1.5)]
    rounds = []
    monkeypatch.setattr(step_overhead, "_rows", lambda args: rounds.append((args.rounds, args.rank_rounds)) or measured)
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["step_overhead.py", "--quick", "--json", str(out)])
    step_overhead.main()

    assert rounds == [(3, 3)]  # --quick
    table = capsys.readouterr().out
    assert "| loop | steps | anchor µs/step | overhead µs/step | ratio | target |" in table, table
    assert "| 1 process, list, 2 step rules | 2000 | 4.00 | 1.00 | 1.250x | ratio <= 1.5x |" in table, table
    assert json.loads(out.read_text()) == measured
