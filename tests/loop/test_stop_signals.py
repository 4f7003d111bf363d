"""A plain process (and a 2-rank gloo job) told to stop by a real signal: every rank
checkpoints at one agreed step, exits with code 75, and the next start resumes bitwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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
    [(1, "TERM", 0), (2, "USR2", 1), (2, "TERM", 0)],  # one rank, the warning signal: tests/cli/test_local_jobs.py (bitwise)
)
def test_stop_signal_checkpoints_at_one_step_and_resumes_bitwise(
    tmp_path: Path, reference_weights: Callable[..., Path], world_size: int, signal_name: str, signal_rank: int
) -> None:
    reference = reference_weights(world_size)

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


@pytest.mark.parametrize("world_size, signal_rank", [(1, 0), (2, 1)])
def test_ctrl_c_checkpoints_at_the_next_boundary_stops_and_resumes_bitwise(
    tmp_path: Path, reference_weights: Callable[..., Path], world_size: int, signal_rank: int
) -> None:
    reference = reference_weights(world_size)

    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    procs = launch(run_dir, out, world_size, None,
                   ("--signal-at-step", "9", "--signal", "INT", "--signal-rank", str(signal_rank)))
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 130, stderr  # the shell's code for Ctrl-C; never requeued
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "stopped" and "ctrl_c: emergency checkpoint" in status["message"]
    assert "run it again to resume" in status["message"]

    report = run_to_end(run_dir, out, world_size)
    assert "emergency" in report
    assert_bitwise_equal(reference, out)


def test_an_unusable_warning_signal_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="warning_signal=SIGKILL cannot be the warning signal"):
        resilient.Run(checkpoint=[], run_dir=tmp_path, warning_signal="KILL")
    assert not (tmp_path / "status.json").exists()  # nothing recorded as running


@pytest.mark.parametrize("code, state", [(0, "completed"), (None, "completed"), (3, "failed")])
def test_sys_exit_in_the_loop_leaves_a_final_state_and_an_end_event(
    tmp_path: Path, code: int | None, state: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        with resilient.Run(checkpoint=[], run_dir=tmp_path) as run:
            for _ in run.batches(range(4)):
                if run.step == 2:
                    sys.exit(code)
    assert exited.value.code == code
    assert json.loads((tmp_path / "status.json").read_text())["state"] == state
    last = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[-1])
    assert last["event"] == ("finished" if state == "completed" else "failed")
