"""Kill-and-resume: SIGKILL a real training process at random steps, restart it each time, and
require the final weights to be bitwise equal to a run that was never interrupted."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from ._jobs import assert_bitwise_equal, launch, run_to_end


@pytest.mark.parametrize("world_size, total_steps", [(1, 48), (2, 24)])
def test_killed_at_random_steps_resumes_bitwise(tmp_path: Path, reference_weights: Callable[..., Path],
                                                world_size: int, total_steps: int) -> None:
    reference = reference_weights(world_size)

    kills = sorted(random.Random(world_size).sample(range(1, total_steps), 3))
    run_dir, out = tmp_path / "interrupted-run", tmp_path / "interrupted.pt"
    for kill_at in kills:
        run_to_end(run_dir, out, world_size, kill_at=kill_at)
        assert not out.exists()
    report = run_to_end(run_dir, out, world_size)

    assert f'"step": {total_steps}' in report
    assert '"resumed_from": null' not in report
    assert_bitwise_equal(reference, out)


def test_a_damaged_file_that_only_rank_1_reads_falls_back_on_every_rank(
        tmp_path: Path, reference_weights: Callable[..., Path]) -> None:
    """Each rank verifies what it reads: rank 1 alone finds its own file damaged, and both ranks still
    move on to the same older checkpoint, with rank 0's warning naming the file."""
    reference = reference_weights(2)
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    run_to_end(run_dir, out, 2, kill_at=9, extra=("--sync",))  # step 8's save committed before step 9
    newest = run_dir / "checkpoints" / "step=8.ckpt"
    damaged = newest / "rank-00001.pt"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    procs = launch(run_dir, out, 2, None)
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr
    assert f"skipping checkpoint {newest}: checkpoint {newest}: payload file rank-00001.pt is corrupt" in outputs[0][1]
    assert json.loads(outputs[0][0])["resumed_from"] != str(newest.resolve())
    assert_bitwise_equal(reference, out)
