"""`benchmarks/vs_lightning_requeue.py` in its quickest mode on the real cluster: one scenario (the
warning signal at preemption), Lightning's own auto-requeue and resilient side by side.

It must print its table and write its rows; what must hold of resilient is asserted (it came back by
itself, completed, and redid no step after the signalled stop, resuming from the emergency checkpoint
of the step it stopped at). Lightning's outcome is what the benchmark reports, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import SlurmCluster

REPO = Path(__file__).resolve().parents[2]


def test_the_quick_comparison_runs_and_resilient_loses_no_step(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "vs_lightning_requeue.py"), "--quick", "--lock-held",
         "--dir", str(tmp_path / "jobs"), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=270, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    rows = {row["tool"]: row for row in json.loads(out.read_text())["rows"]}
    assert sorted(rows) == ["lightning", "resilient"]
    ours = rows["resilient"]
    assert ours["came_back"] and ours["completed"], ours
    assert ours["steps_redone"] == 0 and ours["starts"] == 2, ours
    assert ours["resumed_at_step"] == 8 and Path(ours["resumed_from"]).name == "step=8.ckpt", ours
    assert ours["resumed_from_valid"] == "yes", ours
    assert "| warning-signal | resilient submit + Resilient callback | yes | completed |" in done.stdout, done.stdout
