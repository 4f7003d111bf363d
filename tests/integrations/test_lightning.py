"""Lightning's Trainer with `Resilient`: 2 real processes of Lightning DDP on gloo, stopped by a
real signal (one rank only, or SIGTERM), or SIGKILLed, resume to the same weights bit for bit."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ..loop._jobs import assert_bitwise_equal
from . import _two_ranks as two

SCRIPT = Path(__file__).parent / "scripts" / "lightning_train.py"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two.reference(SCRIPT, tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("signal_name, signal_rank", [("USR2", 1), ("TERM", 0)])
def test_a_signal_to_one_rank_stops_both_at_one_step_and_resume_is_bitwise(
        tmp_path: Path, reference: Path, signal_name: str, signal_rank: int) -> None:
    # Sent after step 10 (epoch 1 of 8-step epochs: Lightning resumes mid-epoch, past the first
    # epoch); the agreement is read one step later on 2 ranks, so both stop after step 11.
    out, _ = two.stop_then_resume(SCRIPT, tmp_path, signal_name, signal_rank,
                                  lambda run_dir: run_dir / "checkpoints" / "emergency" / "step=11.ckpt")
    assert_bitwise_equal(reference, out)


def test_sigkill_at_a_random_step_resumes_from_the_latest_valid_checkpoint_bitwise(
        tmp_path: Path, reference: Path) -> None:
    """Killed after a random step, with the newest checkpoint then truncated (as a kill during its
    write could leave a file on a filesystem without atomic rename): the previous one is resumed
    from, with a warning naming the damaged one, and the weights still end bit for bit the same."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    step = random.Random().randint(11, 22)
    print(f"SIGKILL after step {step}")  # for a failure's report
    two.killed(SCRIPT, run_dir, out, "--signal-at-step", str(step), "--signal", "KILL", "--signal-rank", "0")
    # ModelCheckpoint saves every 5 steps, after the callback that kills (Lightning runs checkpoint callbacks last).
    newest = (step - 1) // 5 * 5
    payload = run_dir / "checkpoints" / f"step={newest}.ckpt" / "lightning.pt"
    payload.write_bytes(payload.read_bytes()[:-100])

    stdout, stderr = two.run(SCRIPT, run_dir, out)
    assert f"skipping checkpoint {payload.parent}" in stderr
    assert f"resumed from {run_dir / 'checkpoints' / f'step={newest - 5}.ckpt'}" in stdout
    assert_bitwise_equal(reference, out)
