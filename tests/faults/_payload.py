"""The state the fault-injection jobs checkpoint, built so that any checkpoint says whether it is right.

After `step` completed steps, every tensor of the model is `arange(n) + step` and the grown
per-rank object holds `arange(grow_kib * 256 * step) + step`. So a checkpoint that loads can be
checked against the step its manifest names, byte for byte, without keeping copies of what was
saved: a checkpoint that loads but holds another step's data, a mix of two steps or a torn
tensor is a *bad load*, the one outcome the suite must never see. Both the job (on resume) and
the tests (on every checkpoint left on disk) use these functions.
"""

from __future__ import annotations

import math
from typing import Any

import torch

FLOATS_PER_KIB = 256
CHUNK = 1 << 18  # float32 values per tensor (1 MiB): arange(CHUNK) + step stays exact in float32


def sizes(kib: int) -> list[int]:
    """Lengths of the model's tensors for a state of `kib` KiB."""
    total = max(1, kib * FLOATS_PER_KIB)
    return [min(CHUNK, total - start) for start in range(0, total, CHUNK)]


def model_at(kib: int, step: int) -> list[torch.Tensor]:
    return [torch.arange(n, dtype=torch.float32).add_(step) for n in sizes(kib)]


def grown_at(grow_kib: int, step: int) -> torch.Tensor:
    return torch.arange(grow_kib * FLOATS_PER_KIB * step, dtype=torch.float32).add_(step)


def score(step: int) -> float:
    """A metric that rises and falls from step to step, so top-k evicts at scattered steps."""
    return round((math.sin(step * 2.4) + 1) / 2, 3)


class Grown:
    """A per-rank tracked object whose state grows with the step: checkpoints grow too (full disk)."""

    def __init__(self, grow_kib: int) -> None:
        self.grow_kib = grow_kib
        self.step = 0
        self.problem: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "data": grown_at(self.grow_kib, self.step)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.problem = grown_problem(state, self.grow_kib, self.step)


def grown_problem(state: dict[str, Any], grow_kib: int, step: int) -> str | None:
    if state.get("step") != step or not torch.equal(state.get("data"), grown_at(grow_kib, step)):
        return f"grown state is not that of step {step}"
    return None


def model_problem(tensors: list[torch.Tensor], kib: int, step: int) -> str | None:
    expected = model_at(kib, step)
    if len(tensors) != len(expected):
        return f"model has {len(tensors)} tensors, step {step} of a {kib} KiB state has {len(expected)}"
    for index, (got, want) in enumerate(zip(tensors, expected)):
        if got.shape != want.shape or not torch.equal(got, want):
            return f"model tensor {index} is not that of step {step}"
    return None


def checkpoint_problem(loaded: dict[str, Any], kib: int, grow_kib: int) -> str | None:
    """Why a checkpoint loaded with `resilient.load_checkpoint` does not hold its step's state (None: it does)."""
    step = loaded["resilient"]["step"]
    model = loaded["model"]
    problem = model_problem([model[str(i)] for i in range(len(model))], kib, step)
    if problem is None and loaded["resilient"]["kind"] == "full":
        if loaded["resilient"]["loop"]["step"] != step:
            problem = f"loop position says step {loaded['resilient']['loop']['step']}, the manifest {step}"
        else:
            problem = grown_problem(loaded["grown"], grow_kib, step)
    return problem and f"step {step}: {problem}"
