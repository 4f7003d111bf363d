"""benchmarks/checkpoint_io.py's own command line: its tables and JSON, on made-up measurements.

tests/test_benchmarks_all.py measures its rows for real, on a tiny state, with every other benchmark's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_the_checkpoint_io_benchmark_prints_its_tables_and_writes_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        benchmark_script: Callable[[str], ModuleType]) -> None:
    checkpoint_io = benchmark_script("checkpoint_io")
    save = checkpoint_io.row("save", 3.0, 0.5, "torch.save + fsync", 1.0, "s", ratio_of="anchor/resilient")
    measured = {"state_mib": 3.0, "rows": [save], "peak_rss_over_state": {"resume (Run.track)": 0.05}}
    calls = []
    monkeypatch.setattr(checkpoint_io, "_run", lambda *args: calls.append(args) or dict(measured))
    result = tmp_path / "io.json"
    monkeypatch.setattr(sys, "argv", ["checkpoint_io.py", "--size-mib", "1", "--count", "10", "--dir", str(tmp_path),
                                      "--json", str(result)])
    checkpoint_io.main()

    assert calls == [(1, str(tmp_path), 3, 10)]
    out = capsys.readouterr().out
    assert "| what | resilient | anchor |" in out, out
    assert "| save | 0.5000 s | torch.save + fsync | 1.0000 s | 2.00x |" in out, out
    assert "| resume | peak RSS over the state size |" in out and "| resume (Run.track) | 0.05x |" in out, out
    written = json.loads(result.read_text())
    assert written["rows"] == measured["rows"] and (written["size_mib"], written["repeats"]) == (1, 3)
