"""Kill-and-resume: SIGKILL a real training process at random steps, restart it each time, and
require the final weights to be bitwise equal to a run that was never interrupted."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from ._jobs import assert_bitwise_equal, run_to_end


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
