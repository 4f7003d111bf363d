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


def test_finished_epoch_stays_finished_under_new_settings():
    saved = ResumableSampler(range(40), 2, 0)
    saved._resume_at(3, 20)
    other = ResumableSampler(range(40), 4, 0)
    other.load_state_dict(saved.state_dict())
    assert other.state_dict()["consumed"] == 10
    assert list(other) == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"dataset": range(41)}, "dataset_size"),
        ({"num_replicas": 4}, "num_replicas"),
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
