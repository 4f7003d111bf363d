"""Fixtures of the loop tests that start real training jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ._jobs import run_to_end


@pytest.fixture(scope="session")
def reference_weights(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`reference_weights(world_size, extra)`: the final weights of an uninterrupted run of train.py with
    those options, trained once per session however many tests compare against it (read only)."""
    made: dict[tuple[int, tuple[str, ...]], Path] = {}

    def weights(world_size: int, extra: tuple[str, ...] = ()) -> Path:
        key = (world_size, tuple(extra))
        if key not in made:
            directory = tmp_path_factory.mktemp("reference")
            run_to_end(directory / "run", directory / "weights.pt", world_size, extra=extra)
            made[key] = directory / "weights.pt"
        return made[key]

    return weights
