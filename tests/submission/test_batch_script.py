"""The batch script a SLURM submission hands to sbatch, compared with golden files.

The script is what submitit renders from our options (`batch_script`, also behind `resilient
submit --dry-run`), so a change in our options or in submitit shows up here as a diff of the
script itself. The folder and the Python interpreter are replaced by `<folder>` and `<python>`,
which makes the files the same on every machine.

To accept a change on purpose, regenerate the files and review their diff:

    RESILIENT_REGENERATE_GOLDEN=1 python -m pytest tests/submission/test_batch_script.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from resilient.submission._executors import batch_script
from resilient.submission._options import JobOptions

GOLDEN = Path(__file__).parent / "golden"
REGENERATE_ENV = "RESILIENT_REGENERATE_GOLDEN"

_CASES = {
    "defaults": JobOptions(executor="slurm"),
    "every_option": JobOptions(
        executor="slurm", nodes=2, tasks_per_node=4, gpus_per_node=4, cpus_per_task=8, mem_gb=64, timeout_min=240,
        partition="gpu", account="ml", qos="high", warning_signal="USR1", signal_delay_s=90,
        slurm_options={"constraint": "a100", "exclusive": True}, max_requeues=3,
    ),
    "node_range": JobOptions(executor="slurm", nodes="1-2"),  # sbatch --nodes=1-2, once
}


def _normalised(script: str, folder: Path) -> str:
    return script.replace(str(folder), "<folder>").replace(sys.executable, "<python>")


@pytest.mark.parametrize("case", sorted(_CASES))
def test_the_batch_script_is_the_golden_one(case: str, tmp_path: Path) -> None:
    folder = tmp_path / "run" / "submitit"
    script = _normalised(batch_script(_CASES[case], folder, "train"), folder)
    golden = GOLDEN / f"{case}.sbatch"
    if os.environ.get(REGENERATE_ENV) == "1":
        golden.write_text(script)
    assert script == golden.read_text(), f"the batch script changed; if on purpose, set {REGENERATE_ENV}=1"
    assert not [path for path in tmp_path.rglob("*") if path.is_file()], "rendering the script submits nothing"


def test_a_sweeps_array_runs_its_tasks_at_most_max_parallel_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "sweep" / "submitit"
    script = _normalised(batch_script(JobOptions(executor="slurm"), folder, "train", (3, 2)), folder)
    assert "#SBATCH --array=0-2%2\n" in script
    assert "#SBATCH --output=<folder>/%A_%a_0_log.out\n" in script and "--output <folder>/%A_%a_%t_log.out" in script
    # submitit submits an array of one task as a plain job: its script has no --array
    assert batch_script(JobOptions(executor="slurm"), folder, "train", (1, 1)) == batch_script(
        JobOptions(executor="slurm"), folder, "train")
