"""Staging: the copy an asynchronous save writes is the state as it was, whatever training does next."""

from __future__ import annotations

import io
from collections import OrderedDict

import pytest
import torch

from resilient.checkpoint import NotStageable, Stager


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _loaded(obj: object) -> object:
    return torch.load(io.BytesIO(_saved(obj)), weights_only=False)


class _Custom:
    """A user object holding a tensor deep inside, as torch.save would pickle it."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.inner = {"list": [tensor, 3]}


def test_the_copy_keeps_the_values_of_the_moment_it_was_taken():
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "note": "x"}
    expected = _loaded(state)
    staged = Stager().stage(state)
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on, in place
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    staged.ready()
    copy = _loaded(staged.state)
    assert torch.equal(copy["model"]["weight"], expected["model"]["weight"])
    assert not torch.equal(copy["model"]["weight"], model.weight.detach())
    for key, value in expected["optimizer"]["state"][0].items():
        assert torch.equal(copy["optimizer"]["state"][0][key], value)
    assert copy["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    assert copy["note"] == "x"


def test_shared_storage_stays_shared_and_is_copied_once():
    base = torch.arange(12, dtype=torch.float32)
    view = base[2:8].view(2, 3)
    state = {"a": base, "tied": base, "view": view, "t": view.t()}
    staged = Stager().stage(state)
    assert staged.nbytes == base.untyped_storage().nbytes()
    copy = staged.state
    assert copy["a"] is copy["tied"]
    assert copy["view"].untyped_storage().data_ptr() == copy["a"].untyped_storage().data_ptr()
    assert copy["view"].storage_offset() == 2 and copy["t"].stride() == view.t().stride()
    assert torch.equal(copy["t"], view.t())
    assert copy["a"].untyped_storage().data_ptr() != base.untyped_storage().data_ptr()
    assert len(_saved(copy)) == len(_saved(state))  # written as torch.save would have written the original


def test_tensors_nested_in_user_objects_and_containers_are_found():
    tensor = torch.ones(3)
    state = OrderedDict(obj=_Custom(tensor), tuple=(tensor, 1.5), parameter=torch.nn.Parameter(torch.zeros(2)))
    copy = Stager().stage(state).state
    assert isinstance(copy, OrderedDict) and isinstance(copy["obj"], _Custom)
    inner = copy["obj"].inner["list"][0]
    tensor.add_(1)
    assert torch.equal(inner, torch.ones(3)) and inner is copy["tuple"][0]
    assert type(copy["parameter"]) is torch.nn.Parameter and copy["parameter"].requires_grad


def test_buffers_are_reused_from_one_save_to_the_next_and_renewed_when_a_size_changes():
    stager = Stager()
    weights = torch.randn(64)
    first = stager.stage({"w": weights}).state["w"]
    pointer = first.untyped_storage().data_ptr()
    weights.add_(1)
    second = stager.stage({"w": weights}).state["w"]
    assert second.untyped_storage().data_ptr() == pointer and torch.equal(second, weights)
    grown = stager.stage({"w": torch.zeros(128)}).state["w"]
    assert grown.numel() == 128 and stager.nbytes == 128 * 4


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation:UserWarning")
@pytest.mark.parametrize("make", [
    lambda: torch.zeros(3, 3).to_sparse(),
    lambda: torch.quantize_per_tensor(torch.zeros(4), 0.1, 0, torch.qint8),
    lambda: torch.zeros(2, dtype=torch.complex64).conj(),
    lambda: torch.empty(2, device="meta"),
    lambda: torch.ones(2, requires_grad=True) * 2,
], ids=["sparse", "quantized", "lazy-conj", "meta", "in-a-graph"])
def test_what_a_copy_cannot_reproduce_is_refused_for_a_synchronous_save(make):
    with pytest.raises(NotStageable):
        Stager().stage({"odd": make()})


def test_a_tensor_subclass_is_refused():
    class Tagged(torch.Tensor):
        pass

    with pytest.raises(NotStageable, match="subclass"):
        Stager().stage([torch.zeros(2).as_subclass(Tagged)])


def test_an_unpicklable_object_fails_as_torch_save_would():
    with pytest.raises(Exception, match="pickle"):
        Stager().stage({"f": lambda: None})


def test_reserved_buffers_are_the_ones_the_first_stage_fills():
    stager = Stager()
    state = {"a": torch.randn(1000), "b": torch.randn(10, 10), "shared": None}
    state["shared"] = state["a"]
    stager.reserve(stager.kinds(state))
    assert stager.nbytes == 1000 * 4 + 100 * 4
    staged = stager.stage(state).state
    assert stager.nbytes == 1000 * 4 + 100 * 4  # nothing more was made
    assert torch.equal(staged["b"], state["b"]) and staged["shared"] is staged["a"]


def test_a_cancelled_reservation_stops_between_chunks_of_its_pages():
    """A run that stops must not wait for buffers it will never use: making them ends at the next look."""
    stager = Stager()
    state = {"big": torch.zeros(2 * 2**20, dtype=torch.float64), "small": torch.zeros(10)}  # 16 MiB: one chunk
    looks = []
    stager.reserve(stager.kinds(state), cancelled=lambda: looks.append(1) or len(looks) > 2)
    assert stager.nbytes == 16 * 2**20  # the first buffer, made and touched; the second never made
    assert len(looks) == 3
    stager.reserve(stager.kinds(state))  # not cancelled: what is missing is made now
    assert stager.nbytes == 16 * 2**20 + 40
