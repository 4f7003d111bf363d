"""Lightning's Trainer with `Resilient`: 2 real processes of Lightning DDP on gloo, stopped by a
real signal (one rank only, or SIGTERM), or SIGKILLed, resume to the same weights bit for bit."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..loop._jobs import assert_bitwise_equal, rank_envs

SCRIPT = Path(__file__).parent / "scripts" / "lightning_train.py"
EXIT_STOPPED = 75
WORLD = 2


def _launch(run_dir: Path, out: Path, *extra: str) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, str(SCRIPT), "--run-dir", str(run_dir), "--out", str(out), *extra],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for env in rank_envs(WORLD)]


def _run(run_dir: Path, out: Path, *extra: str, code: int = 0) -> tuple[str, str]:
    """Both ranks to their end, each exiting with `code`; rank 0's stdout and stderr."""
    procs = _launch(run_dir, out, *extra)
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
    # Sent after step 10 (epoch 1 of 8-step epochs: Lightning resumes mid-epoch, past the first
    # epoch); the agreement is read one step later on 2 ranks, so both stop after step 11.
    _run(run_dir, out, "--signal-at-step", "10", "--signal", signal_name, "--signal-rank", str(signal_rank),
         code=EXIT_STOPPED)
    emergency = run_dir / "checkpoints" / "emergency" / "step=11.ckpt"
    assert (emergency / "MANIFEST.json").is_file()
    assert _status(run_dir)["state"] == "stopped"

    stdout, _ = _run(run_dir, out)
    assert f"resumed from {emergency}" in stdout
    assert_bitwise_equal(reference, out)
    assert _status(run_dir)["state"] == "completed"


def test_sigkill_at_a_random_step_resumes_from_the_latest_valid_checkpoint_bitwise(
        tmp_path: Path, reference: Path) -> None:
    """Killed after a random step, with the newest checkpoint then truncated (as a kill during its
    write could leave a file on a filesystem without atomic rename): the previous one is resumed
    from, with a warning naming the damaged one, and the weights still end bit for bit the same."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    step = random.Random().randint(11, 22)
    print(f"SIGKILL after step {step}")  # for a failure's report
    procs = _launch(run_dir, out, "--signal-at-step", str(step), "--signal", "KILL", "--signal-rank", "0")
    procs[0].wait(timeout=240)
    assert procs[0].returncode == -signal.SIGKILL, procs[0].communicate()[1]
    procs[1].kill()  # its peer is gone: stuck in a collective, or failing; SLURM would kill it too
    for proc in procs:
        proc.communicate()
    # ModelCheckpoint saves every 5 steps, after the callback that kills (Lightning runs checkpoint callbacks last).
    newest = (step - 1) // 5 * 5
    payload = run_dir / "checkpoints" / f"step={newest}.ckpt" / "lightning.pt"
    payload.write_bytes(payload.read_bytes()[:-100])

    stdout, stderr = _run(run_dir, out)
    assert f"skipping checkpoint {payload.parent}" in stderr
    assert f"resumed from {run_dir / 'checkpoints' / f'step={newest - 5}.ckpt'}" in stdout
    assert_bitwise_equal(reference, out)
