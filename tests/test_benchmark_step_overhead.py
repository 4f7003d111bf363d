"""benchmarks/step_overhead.py still runs, one process and two gloo ranks, on tiny sizes.

A benchmark nobody runs rots; CI runs it once with `--quick` to prove that it works. Its numbers
are not checked here (no timed assertions): they are read from a full run, in the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_step_overhead_benchmark_prints_its_table_and_writes_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RESILIENT_RUN_DIR"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_overhead.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    assert "| loop | steps | anchor µs/step | overhead µs/step | ratio | target |" in done.stdout
    rows = json.loads(out.read_text())
    assert [row["what"] for row in rows] == [
        "1 process, list, 2 step rules", "1 process, DataLoader, 2 step rules",
        "1 process, DataLoader, step + time rule", "2 ranks (gloo), 10 ms step",
    ]
    for row in rows:
        assert row["what"] in done.stdout
        assert row["anchor_value"] > 0 and row["resilient"] > 0 and row["ratio"] > 0
