from __future__ import annotations

import io

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from resilient.loop.sampler import ResumableSampler


class Squares(Dataset):
    """Module level so DataLoader workers can receive it under any start method."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index * index


class CountingSampler(ResumableSampler):
    """Counts indices handed to the DataLoader, to show it reads ahead of the loop."""

    drawn = 0

    def __iter__(self):
        for index in super().__iter__():
            self.drawn += 1
            yield index


CONFIGS = [
    # (dataset size, replicas, shuffle, drop_last, seed): even split, padding, padding larger than
    # the dataset, dropped tail, tiny and empty datasets, a negative seed.
    (20, 4, True, False, 0),
    (23, 4, True, False, 7),
    (3, 8, True, False, 1),
    (23, 4, True, True, 3),
    (23, 3, False, False, 0),
    (23, 3, False, True, 0),
    (1, 4, True, True, 0),
    (0, 2, True, False, 0),
    (17, 1, True, False, -5),
]


@pytest.mark.parametrize(("size", "replicas", "shuffle", "drop_last", "seed"), CONFIGS)
def test_order_and_length_equal_distributed_sampler(size, replicas, shuffle, drop_last, seed):
    data = range(size)
    for rank in range(replicas):
        ours = ResumableSampler(data, replicas, rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        theirs = DistributedSampler(data, replicas, rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        for epoch in (0, 1, 5):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs), (rank, epoch)
        assert len(ours) == len(theirs)


def test_epochs_shuffle_differently():
    sampler = ResumableSampler(range(50), 1, 0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert sorted(list(sampler)) == sorted(first) == list(range(50))


def test_defaults_are_a_single_process():
    sampler = ResumableSampler(range(10))
    assert (sampler.num_replicas, sampler.rank) == (1, 0)


def test_resume_from_state_dict_yields_exactly_the_rest():
    data = range(37)
    full = ResumableSampler(data, 3, 2, seed=11)
    full.set_epoch(4)
    expected = list(full)

    interrupted = ResumableSampler(data, 3, 2, seed=11)
    interrupted.set_epoch(4)
    iter(interrupted)
    interrupted._note_consumed(5)
    buffer = io.BytesIO()
    torch.save(interrupted.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed = ResumableSampler(data, 3, 2, seed=11)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # the usual top-of-epoch call must not lose the resume position
    assert resumed.epoch == 4
    assert resumed.state_dict()["consumed"] == 5
    assert list(resumed) == expected[5:]
    assert list(resumed) == expected  # the resume position applies to one pass only
    resumed.set_epoch(5)
    full.set_epoch(5)
    assert list(resumed) == list(full)


def test_resume_at_then_next_epoch_starts_at_zero():
    sampler = ResumableSampler(range(12), 2, 1, seed=3)
    sampler._resume_at(2, 4)
    assert sampler.state_dict()["consumed"] == 4
    assert len(list(sampler)) == 2
    sampler.set_epoch(3)
    assert (sampler.state_dict()["epoch"], sampler.state_dict()["consumed"]) == (3, 0)
    assert len(list(sampler)) == 6


def test_consumed_past_the_end_means_epoch_done():
    sampler = ResumableSampler(range(10), 1, 0)
    iter(sampler)
    sampler._note_consumed(12)  # three batches of 4 over 10 samples
    assert sampler.state_dict()["consumed"] == 10
    sampler._resume_at(0, 99)
    assert list(sampler) == []


def test_dataloader_workers_prefetch_but_state_is_what_the_loop_noted():
    dataset = Squares(64)
    sampler = CountingSampler(dataset, 2, 0, seed=5)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2, prefetch_factor=2)
    loop_seen = []
    for step, batch in enumerate(loader, start=1):
        loop_seen.extend(batch.tolist())
        sampler._note_consumed(step * 4)
        if step == 3:
            break
    state = sampler.state_dict()
    assert sampler.drawn > 12  # the workers were handed indices the loop never used...
    assert state["consumed"] == 12  # ...and they are not counted as consumed
    del loader

    resumed = ResumableSampler(dataset, 2, 0, seed=5)
    resumed.load_state_dict(state)
    rest = [value for batch in DataLoader(dataset, batch_size=4, sampler=resumed) for value in batch.tolist()]
    everything = [dataset[i] for i in ResumableSampler(dataset, 2, 0, seed=5)]
    assert loop_seen + rest == everything


def test_settings_may_change_at_an_epoch_boundary():
    saved = ResumableSampler(range(40), 2, 0, seed=1)
    saved._resume_at(3, 0)
    grown = ResumableSampler(range(60), 4, 1, seed=1)
    grown.load_state_dict(saved.state_dict())
    assert (grown.epoch, grown.state_dict()["consumed"]) == (3, 0)
    assert len(list(grown)) == 15


@pytest.mark.parametrize("replicas", [4, 1])
def test_finished_epoch_stays_finished_on_another_world_size(replicas):
    saved = ResumableSampler(range(40), 2, 0)
    saved._resume_at(3, 20)
    other = ResumableSampler(range(40), replicas, 0)
    other.load_state_dict(saved.state_dict())
    assert other.state_dict()["consumed"] == 20  # in the saved ranks' positions, as the loop counts
    assert list(other) == []
    other._resume_at(3, 20)  # what Run does next, from its count of batches
    assert list(other) == []


def test_finished_epoch_stays_finished_under_new_settings():
    saved = ResumableSampler(range(40), 2, 0)
    saved._resume_at(3, 20)
    other = ResumableSampler(range(48), 2, 0)
    other.load_state_dict(saved.state_dict())
    assert other.state_dict()["consumed"] == 24
    assert list(other) == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"dataset": range(41)}, "dataset_size"),
        ({"shuffle": False}, "shuffle"),
        ({"seed": 2}, "seed"),
        ({"drop_last": True, "dataset": range(41)}, "drop_last"),
    ],
)
def test_mid_epoch_resume_refuses_a_different_order(kwargs, named):
    saved = ResumableSampler(range(40), 2, 0, seed=1)
    saved._resume_at(1, 7)
    settings = {"dataset": range(40), "num_replicas": 2, "rank": 0, "seed": 1} | kwargs
    other = ResumableSampler(**settings)
    with pytest.raises(ValueError, match=named):
        other.load_state_dict(saved.state_dict())


def test_load_state_dict_rejects_malformed_state():
    sampler = ResumableSampler(range(10), 1, 0)
    with pytest.raises(TypeError, match="state"):
        sampler.load_state_dict([1, 2])
    with pytest.raises(ValueError, match="consumed"):
        sampler.load_state_dict({"epoch": 0})
    with pytest.raises(TypeError, match=r"state\['epoch'\]"):
        sampler.load_state_dict(sampler.state_dict() | {"epoch": "1"})
    with pytest.raises(ValueError, match=r"state\['consumed'\]"):
        sampler.load_state_dict(sampler.state_dict() | {"consumed": -1})


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"num_replicas": 2, "rank": 2}, ValueError, "rank"),
        ({"num_replicas": 2, "rank": -1}, ValueError, "rank"),
        ({"num_replicas": 0, "rank": 0}, ValueError, "num_replicas"),
        ({"num_replicas": 2.0, "rank": 0}, TypeError, "num_replicas"),
        ({"num_replicas": 2, "rank": True}, TypeError, "rank"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"shuffle": 1}, TypeError, "shuffle"),
        ({"drop_last": None}, TypeError, "drop_last"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, error, named):
    with pytest.raises(error, match=named):
        ResumableSampler(range(10), **kwargs)


def test_bad_dataset_and_epoch():
    with pytest.raises(TypeError, match="dataset"):
        ResumableSampler(iter(range(10)))
    sampler = ResumableSampler(range(10))
    with pytest.raises(ValueError, match="epoch"):
        sampler.set_epoch(-1)
    with pytest.raises(ValueError, match="consumed"):
        sampler._resume_at(0, -3)


def _epoch_over_world_sizes(size: int, phases: list[tuple[int, int | None]], drop_last: bool = False) -> list[int]:
    """Every sample one epoch hands out, when its ranks change: each phase is (world size, steps
    of 2 samples per rank before the job stops, None: to the epoch's end), the next phase resuming
    from the state rank 0 saved, as a Run does (`load_state_dict`, then `_resume_at` the loop's position)."""
    seen: list[int] = []
    state = None
    for world, steps in phases:
        samplers = [ResumableSampler(range(size), world, rank, seed=3, drop_last=drop_last) for rank in range(world)]
        for sampler in samplers:
            sampler.set_epoch(1)
            if state is not None:
                sampler.load_state_dict(state)
                sampler._resume_at(1, state["consumed"])
        position = samplers[0]._consumed
        orders = [list(iter(sampler)) for sampler in samplers]
        assert len({len(order) for order in orders}) == 1, "every rank takes as many samples"
        taken = len(orders[0]) if steps is None else min(2 * steps, len(orders[0]))
        for order in orders:
            seen += order[:taken]
        for sampler in samplers:
            sampler._note_consumed(position + taken)
        states = [sampler.state_dict() for sampler in samplers]
        assert all(each == states[0] for each in states), "the state holds no rank"
        state = states[0]
    return seen


@pytest.mark.parametrize("phases", [
    [(2, 3), (1, None)],
    [(1, 5), (2, None)],
    [(2, 3), (1, 4), (2, None)],
    [(4, 1), (2, 2), (4, 1), (1, None)],
    [(2, 10), (1, None)],  # stopped after the epoch's last batch, before its end: nothing is left
    [(2, 10), (3, None)],
])
def test_a_new_world_size_mid_epoch_deals_out_the_rest_of_it_once(phases):
    """40 samples split evenly however many ranks: every sample of the epoch exactly once."""
    assert sorted(_epoch_over_world_sizes(40, phases)) == list(range(40))


def test_only_padding_repeats_a_sample_when_the_rest_does_not_split_evenly():
    seen = _epoch_over_world_sizes(41, [(2, 3), (3, None)])  # 41 - 12 = 29 left for 3 ranks: 1 padded
    assert set(seen) == set(range(41)) and len(seen) == 42
    dropped = _epoch_over_world_sizes(41, [(2, 3), (3, None)], drop_last=True)  # 40 dealt, 28 of the rest
    assert len(dropped) == len(set(dropped)) == 12 + 27


def test_the_same_world_size_again_keeps_the_dealt_order():
    """A remapped epoch resumed on as many ranks as it ended on goes on from where it was."""
    assert sorted(_epoch_over_world_sizes(40, [(2, 3), (1, 4), (1, 3), (1, None)])) == list(range(40))


def test_the_next_epoch_is_plain_distributed_sampler_order_again():
    sampler = ResumableSampler(range(40), 1, 0, seed=3)
    saved = ResumableSampler(range(40), 2, 0, seed=3)
    saved._resume_at(1, 6)
    sampler.load_state_dict(saved.state_dict())
    assert len(sampler) == 6 + 28 and "segments" in sampler.state_dict()
    sampler.set_epoch(2)
    reference = torch.utils.data.DistributedSampler(range(40), 1, 0, seed=3)
    reference.set_epoch(2)
    assert list(sampler) == list(reference) and "segments" not in sampler.state_dict() and len(sampler) == 40


@pytest.mark.parametrize("segments", [[], [[2, 0], [1]], [[2, 5], [1, 8]], [[2, 0], [1, 8], [3, 4]], "x",
                                      [[2, 0]] * 1001, [[0, 0]]])
def test_malformed_segments_are_refused(segments):
    saved = ResumableSampler(range(40), 2, 0, seed=3)
    saved._resume_at(1, 6)
    with pytest.raises(ValueError, match="segments"):
        ResumableSampler(range(40), 1, 0, seed=3).load_state_dict(saved.state_dict() | {"segments": segments})
