"""Hugging Face's Trainer with `Resilient`, and a plain Accelerate loop with `AcceleratorCheckpoints`:
2 real processes of DDP on gloo, stopped by a real signal (one rank only, or SIGTERM), or
SIGKILLed inside a save, resume to the same weights bit for bit. The models have dropout, so the
weights depend on each rank's restored RNG state, and the stops fall mid-epoch, so on the data
position too."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from resilient.checkpoint import read_manifest

from ..loop._jobs import assert_bitwise_equal
from . import _two_ranks as two

SCRIPT = Path(__file__).parent / "scripts" / "huggingface_train.py"
ACCELERATE_SCRIPT = Path(__file__).parent / "scripts" / "accelerate_train.py"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two.reference(SCRIPT, tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("signal_name, signal_rank", [("USR2", 1), ("TERM", 0)])
def test_a_signal_to_one_rank_stops_both_at_one_step_and_resume_is_bitwise(
        tmp_path: Path, reference: Path, signal_name: str, signal_rank: int) -> None:
    # Sent after step 10 (epoch 1 of 8-step epochs: the Trainer resumes mid-epoch); the agreement
    # is read one step later on 2 ranks, so both stop after step 11, which is no periodic save step.
    out, _ = two.stop_then_resume(SCRIPT, tmp_path, signal_name, signal_rank,
                                  lambda run_dir: run_dir / "hf" / "checkpoint-11")
    assert read_manifest(tmp_path / "run" / "hf" / "checkpoint-11").rule == "emergency"
    assert_bitwise_equal(reference, out)


def test_sigkill_inside_a_save_resumes_from_the_latest_valid_checkpoint_bitwise(
        tmp_path: Path, reference: Path) -> None:
    """Killed at a random save step after the Trainer wrote checkpoint-N and would have rotated
    (save_total_limit=2), before the commit; the newest committed one is then truncated. The
    Trainer's own rotation would have left nothing valid (it keeps checkpoint-N and N-5, and
    deletes N-10 first); here N-10 is still there and resumed from, with a warning naming the
    damaged file, and the weights end bit for bit the same."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    step = random.Random().choice([15, 20])  # a committed checkpoint 10 steps before
    print(f"SIGKILL inside the save of step {step}")  # for a failure's report
    two.killed(SCRIPT, run_dir, out, "--signal-at-step", str(step), "--signal", "KILL", "--in-save")
    hf = run_dir / "hf"
    assert (hf / f"checkpoint-{step}" / "model.safetensors").is_file()  # written by the Trainer, not committed
    assert not (hf / f"checkpoint-{step}" / "MANIFEST.json").exists()
    payload = hf / f"checkpoint-{step - 5}" / "model.safetensors"
    payload_bytes = payload.read_bytes()[:-100]
    payload.write_bytes(payload_bytes)

    stdout, stderr = two.run(SCRIPT, run_dir, out)
    assert f"skipping checkpoint {hf / f'checkpoint-{step}'}" in stderr
    assert f"skipping checkpoint {payload.parent}: checkpoint {payload.parent}: payload file model.safetensors" in stderr
    assert f"resumed from {hf / f'checkpoint-{step - 10}'}" in stdout
    assert_bitwise_equal(reference, out)
    # Rotation after the resume kept the limit (the last two, the final step's included), counting
    # committed checkpoints only, and spared the one resumed from.
    names = {path.name for path in hf.iterdir()}
    aside = {name for name in names if ".unverified-" in name}
    assert names - aside == {f"checkpoint-{n}" for n in (20, 24, step - 10)}
    # The two it skipped are kept, out of the Trainer's way, never deleted.
    assert {name.split(".unverified-")[0] for name in aside} == {f"checkpoint-{step}", f"checkpoint-{step - 5}"}
    assert (hf / next(name for name in aside if name.startswith(f"checkpoint-{step - 5}.")) / "model.safetensors"
            ).read_bytes() == payload_bytes


@pytest.fixture(scope="module")
def accelerate_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two.reference(ACCELERATE_SCRIPT, tmp_path_factory.mktemp("accelerate-reference"))


def test_a_plain_accelerate_loop_stopped_on_one_rank_resumes_bitwise(tmp_path: Path, accelerate_reference: Path) -> None:
    """AcceleratorCheckpoints: save_state sealed and renamed into place, the agreed stop, load_state."""
    out, _ = two.stop_then_resume(ACCELERATE_SCRIPT, tmp_path, "USR2", 1,
                                  lambda run_dir: run_dir / "checkpoints" / "step=11.ckpt")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert read_manifest(checkpoints / "step=11.ckpt").rule == "emergency"
    assert_bitwise_equal(accelerate_reference, out)
    # keep=2, and the one resumed from (step 11) is spared: the end's saves at 15, 20 leave those.
    assert sorted(path.name for path in checkpoints.iterdir()) == ["step=11.ckpt", "step=15.ckpt", "step=20.ckpt"]


def test_sigkill_inside_an_accelerate_save_resumes_from_the_latest_valid_checkpoint_bitwise(
        tmp_path: Path, accelerate_reference: Path) -> None:
    """Killed inside the save of a random step (its temporary directory begun, nothing committed);
    a byte of the newest committed checkpoint's weights is then flipped, which only the checksum
    sees. Every rank resumes from the one before, after a warning naming the damaged file; the
    temporary is tidied, and the weights end bit for bit the same."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    step = random.Random().choice([15, 20])  # a committed checkpoint 10 steps before
    print(f"SIGKILL inside the save of step {step}")  # for a failure's report
    two.killed(ACCELERATE_SCRIPT, run_dir, out, "--signal-at-step", str(step), "--signal", "KILL", "--in-save")
    checkpoints = run_dir / "checkpoints"
    assert [name for name in os.listdir(checkpoints) if name.startswith(f".step={step}.ckpt.tmp-")]
    assert not (checkpoints / f"step={step}.ckpt").exists()
    payload = checkpoints / f"step={step - 5}.ckpt" / "model.safetensors"
    damaged = bytearray(payload.read_bytes())
    damaged[-1] ^= 0xFF
    payload.write_bytes(damaged)

    outputs = two.run_all(ACCELERATE_SCRIPT, run_dir, out)
    assert (f"skipping checkpoint {payload.parent}: checkpoint {payload.parent}: payload file model.safetensors "
            "is corrupt (its checksum does not match)") in outputs[0][1]
    resumed = checkpoints / f"step={step - 10}.ckpt"
    for rank, (stdout, _) in enumerate(outputs):
        assert f"rank {rank} resumed from {resumed}" in stdout, stdout
    assert_bitwise_equal(accelerate_reference, out)
    # The temporary is gone; step - 5 was written again in place of the damaged one; keep=2 spares the resumed one.
    assert sorted(os.listdir(checkpoints)) == sorted(f"step={n}.ckpt" for n in {step - 10, 15, 20})
