from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from resilient.loop._rng import capture_rng, restore_rng


def draw() -> tuple:
    """One draw from each generator, including numpy's cached second Gaussian."""
    return (
        torch.rand(5).tolist(),
        torch.randint(0, 1000, (3,)).tolist(),
        np.random.rand(4).tolist(),
        np.random.standard_normal(),
        random.random(),
        random.gauss(0, 1),
    )


def reload(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_restore_repeats_every_generator():
    np.random.standard_normal()  # leave a cached Gaussian in numpy's state
    random.gauss(0, 1)  # and in Python's
    state = capture_rng()
    first = draw()
    assert draw() != first  # the generators moved on
    restore_rng(state)
    assert draw() == first


def test_state_survives_weights_only_load():
    state = capture_rng()
    first = draw()
    loaded = reload(state)
    draw()
    restore_rng(loaded)
    assert draw() == first
    assert loaded["numpy"]["keys"].dtype == torch.int64


def test_restored_numpy_state_is_exact():
    state = capture_rng()
    before = np.random.get_state()
    np.random.rand(1000)
    restore_rng(reload(state))
    after = np.random.get_state()
    assert after[0] == before[0]
    assert after[1].dtype == np.uint32
    assert np.array_equal(after[1], before[1])
    assert after[2:] == before[2:]


def test_python_state_serialized_as_lists_still_restores():
    state = capture_rng()
    version, internal, gauss = state["python"]
    first = draw()
    restore_rng(state | {"python": [version, list(internal), gauss]})
    assert draw() == first


def test_cpu_state_has_no_cuda_entry_and_restores_silently(monkeypatch, recwarn):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only process, even on a GPU box
    state = capture_rng()
    assert "cuda" not in state
    restore_rng(state)
    assert len(recwarn) == 0


class FakeCuda:
    """Stands in for torch.cuda's RNG functions with `devices` GPUs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, devices: int) -> None:
        self.states = [torch.full((8,), i, dtype=torch.uint8) for i in range(devices)]
        self.restored: list[torch.Tensor] | None = None
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_all)

    def set_all(self, states: list[torch.Tensor]) -> None:
        self.restored = list(states)


def test_cuda_states_round_trip(monkeypatch):
    """MOCK: no GPU here, so torch.cuda's RNG functions are replaced by a fake with 2 devices."""
    cuda = FakeCuda(monkeypatch, devices=2)
    state = reload(capture_rng())
    assert [t.tolist() for t in state["cuda"]] == [[0] * 8, [1] * 8]
    restore_rng(state)
    assert [t.tolist() for t in cuda.restored] == [[0] * 8, [1] * 8]


def test_cuda_states_for_more_devices_restore_what_fits_and_warn(monkeypatch):
    """MOCK: no GPU here; the checkpoint came from a process with 3 GPUs, this one has 1 (fake)."""
    state = capture_rng() | {"cuda": [torch.full((8,), i, dtype=torch.uint8) for i in range(3)]}
    cuda = FakeCuda(monkeypatch, devices=1)
    with pytest.warns(UserWarning, match=r"3 device\(s\).*sees 1"):
        restore_rng(state)
    assert [t.tolist() for t in cuda.restored] == [[0] * 8]


def test_cuda_states_without_any_gpu_warn_and_restore_the_rest(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = capture_rng() | {"cuda": [torch.zeros(8, dtype=torch.uint8)]}
    first = draw()
    with pytest.warns(UserWarning, match=r"1 device\(s\).*sees 0"):
        restore_rng(state)
    assert draw() == first


def test_bad_state():
    with pytest.raises(TypeError, match="state"):
        restore_rng([1, 2])
    with pytest.raises(ValueError, match="model"):
        restore_rng(capture_rng() | {"model": {}})


def test_a_new_ranks_seeded_streams_are_its_own_and_leave_this_process_alone():
    from resilient.loop._rng import seeded_rng

    before = capture_rng()
    first, again, other = seeded_rng(5), seeded_rng(5), seeded_rng(6)
    assert torch.equal(first["torch"], again["torch"]) and first["python"] == again["python"]
    assert not torch.equal(first["torch"], other["torch"]) and first["python"] != other["python"]
    assert torch.equal(capture_rng()["torch"], before["torch"]) and capture_rng()["python"] == before["python"]
