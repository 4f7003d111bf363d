"""benchmarks/checkpoint_io.py runs on a tiny state and prints its table and JSON (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_checkpoint_io_benchmark_runs_on_a_tiny_state(tmp_path):
    result = tmp_path / "io.json"
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "checkpoint_io.py"), "--size-mib", "1", "--count", "10",
         "--dir", str(tmp_path), "--json", str(result)],
        check=True, capture_output=True, text=True, env=environment, timeout=300,
    ).stdout
    assert "| what | resilient | anchor |" in out and "| resume | peak RSS over the state size |" in out
    rows = json.loads(result.read_text())["rows"]
    assert [row["anchor"] for row in rows][:3] == ["torch.save + fsync", "raw tensor bytes + fdatasync",
                                                   "DCP save (torch.distributed.checkpoint)"]
    assert {"resume, warm", "resume, cold (pages evicted)", "latest valid among 10 checkpoints"} <= {
        row["what"] for row in rows}
    assert all(row["ratio"] > 0 for row in rows)
    assert [path.name for path in tmp_path.iterdir()] == ["io.json"]  # its work directory is gone
