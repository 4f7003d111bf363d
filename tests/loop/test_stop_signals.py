"""A plain process (and a 2-rank gloo job) told to stop by a real signal: every rank
checkpoints at one agreed step, exits with code 75, and the next start resumes bitwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import resilient

from ._jobs import assert_bitwise_equal, launch, run_to_end

EXIT_STOPPED = 75


def _signalled_run(run_dir: Path, out: Path, world_size: int, extra: tuple[str, ...]) -> list[int]:
    procs = launch(run_dir, out, world_size, None, extra)
    codes = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        codes.append(proc.returncode)
        assert proc.returncode == EXIT_STOPPED, stderr
    return codes


@pytest.mark.parametrize(
    "world_size, signal_name, signal_rank",
    [(1, "TERM", 0), (1, "USR2", 0), (2, "USR2", 1), (2, "TERM", 0)],
)
def test_stop_signal_checkpoints_at_one_step_and_resumes_bitwise(
    tmp_path: Path, world_size: int, signal_name: str, signal_rank: int
) -> None:
    reference = tmp_path / "reference.pt"
    run_to_end(tmp_path / "reference-run", reference, world_size)

    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    signal_at = 9  # sent during step 10
    _signalled_run(run_dir, out, world_size,
                   ("--signal-at-step", str(signal_at), "--signal", signal_name, "--signal-rank", str(signal_rank)))

    # One process acts at the boundary right after the signal; with several ranks the
    # agreement is read one step later, and every rank stops at that same step.
    expected_step = signal_at + 1 + (world_size > 1)
    emergency = run_dir / "checkpoints" / "emergency" / f"step={expected_step}.ckpt"
    saved = resilient.load_checkpoint(emergency)
    assert saved["resilient"]["step"] == expected_step and saved["resilient"]["world_size"] == world_size
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "stopped" and "emergency checkpoint" in status["message"]

    report = run_to_end(run_dir, out, world_size)
    assert str(emergency.resolve()) in report
    assert_bitwise_equal(reference, out)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
