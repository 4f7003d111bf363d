"""Hugging Face's Trainer with `Resilient`: 2 real processes of DDP on gloo, stopped by a real
signal (one rank only, or SIGTERM), or SIGKILLed inside a save, resume to the same weights bit
for bit. The model has dropout, so the weights depend on each rank's restored RNG state, and the
stops fall mid-epoch, so on the data position too."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resilient.checkpoint import read_manifest

from ..loop._jobs import assert_bitwise_equal, rank_envs

SCRIPT = Path(__file__).parent / "scripts" / "huggingface_train.py"
ACCELERATE_SCRIPT = Path(__file__).parent / "scripts" / "accelerate_train.py"
EXIT_STOPPED = 75
WORLD = 2


def _launch(run_dir: Path, out: Path, *extra: str, script: Path = SCRIPT) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, str(script), "--run-dir", str(run_dir), "--out", str(out), *extra],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for env in rank_envs(WORLD)]


def _run(run_dir: Path, out: Path, *extra: str, code: int = 0, script: Path = SCRIPT) -> tuple[str, str]:
    """Both ranks to their end, each exiting with `code`; rank 0's stdout and stderr."""
    procs = _launch(run_dir, out, *extra, script=script)
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == code, stderr
    return outputs[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The weights of the same job never interrupted."""
    base = tmp_path_factory.mktemp("reference")
    _run(base / "run", base / "out.pt")
    return base / "out.pt"


def _status(run_dir: Path) -> dict[str, object]:
    return json.loads((run_dir / "status.json").read_text())


@pytest.mark.parametrize("signal_name, signal_rank", [("USR2", 1), ("TERM", 0)])
def test_a_signal_to_one_rank_stops_both_at_one_step_and_resume_is_bitwise(
        tmp_path: Path, reference: Path, signal_name: str, signal_rank: int) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    # Sent after step 10 (epoch 1 of 8-step epochs: the Trainer resumes mid-epoch); the agreement
    # is read one step later on 2 ranks, so both stop after step 11, which is no periodic save step.
    _run(run_dir, out, "--signal-at-step", "10", "--signal", signal_name, "--signal-rank", str(signal_rank),
         code=EXIT_STOPPED)
    emergency = run_dir / "hf" / "checkpoint-11"
    assert read_manifest(emergency).rule == "emergency"
    assert _status(run_dir)["state"] == "stopped"

    stdout, _ = _run(run_dir, out)
    assert f"resumed from {emergency}" in stdout
    assert_bitwise_equal(reference, out)
    assert _status(run_dir)["state"] == "completed"


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
    procs = _launch(run_dir, out, "--signal-at-step", str(step), "--signal", "KILL", "--in-save")
    procs[0].wait(timeout=240)
    assert procs[0].returncode == -signal.SIGKILL, procs[0].communicate()[1]
    procs[1].kill()  # its peer is gone: stuck in a collective, or failing; SLURM would kill it too
    for proc in procs:
        proc.communicate()
    hf = run_dir / "hf"
    assert (hf / f"checkpoint-{step}" / "model.safetensors").is_file()  # written by the Trainer, not committed
    assert not (hf / f"checkpoint-{step}" / "MANIFEST.json").exists()
    payload = hf / f"checkpoint-{step - 5}" / "model.safetensors"
    payload.write_bytes(payload.read_bytes()[:-100])

    stdout, stderr = _run(run_dir, out)
    assert f"skipping checkpoint {hf / f'checkpoint-{step}'}" in stderr
    assert f"skipping checkpoint {payload.parent}: checkpoint {payload.parent}: payload file model.safetensors" in stderr
    assert f"resumed from {hf / f'checkpoint-{step - 10}'}" in stdout
    assert_bitwise_equal(reference, out)
    # Rotation after the resume kept the limit (the last two, the final step's included), counting
    # committed checkpoints only, and spared the one resumed from.
    assert {path.name for path in hf.iterdir()} == {f"checkpoint-{n}" for n in (20, 24, step - 10)}


def test_a_plain_accelerate_loop_stopped_on_one_rank_resumes_bitwise(tmp_path: Path) -> None:
    """AcceleratorCheckpoints: save_state sealed and renamed into place, the agreed stop, load_state."""
    _run(tmp_path / "reference", tmp_path / "reference.pt", script=ACCELERATE_SCRIPT)
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    _run(run_dir, out, "--signal-at-step", "10", "--signal-rank", "1", code=EXIT_STOPPED, script=ACCELERATE_SCRIPT)
    emergency = run_dir / "checkpoints" / "step=11.ckpt"
    assert read_manifest(emergency).rule == "emergency"
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["step=10.ckpt", "step=11.ckpt"]

    stdout, _ = _run(run_dir, out, script=ACCELERATE_SCRIPT)
    assert f"resumed from {emergency}" in stdout
    assert_bitwise_equal(tmp_path / "reference.pt", out)
