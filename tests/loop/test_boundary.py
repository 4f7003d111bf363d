"""The stop flags' layout in the vector every rank agrees on, and the phase strings on disk."""

from __future__ import annotations

import signal

import pytest

from resilient.loop._boundary import StopFlags
from resilient.loop._progress import Phase, Progress
from resilient.rules import ModelCheckpoint, identity_key


def test_flags_encode_in_their_documented_order_and_decode_back():
    flags = StopFlags(warning=True, deadline=True, timed=(False, True))
    assert flags.encode() == [1, 0, 0, 1, 0, 1]
    assert StopFlags.decode(flags.encode()) == flags
    assert StopFlags.decode([0, 1, 0, 0]) == StopFlags(sigterm=True)
    assert StopFlags.width(2) == 6 == len(flags.encode())


@pytest.mark.parametrize("vector", [[0, 0, 0, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1]])
def test_stopping_reads_only_the_stop_flags(vector):
    assert StopFlags.decode(vector).stopping == any(vector[:4])


def test_a_rank_s_view_names_the_signals_it_received():
    seen = StopFlags.observed({signal.SIGUSR2: 1.0, signal.SIGINT: 2.0}, signal.SIGUSR2, deadline=False,
                              timed=[True])
    assert seen == StopFlags(warning=True, sigint=True, timed=(True,))
    assert seen.signals(signal.SIGUSR2) == {signal.SIGUSR2, signal.SIGINT}
    assert seen.reasons(signal.SIGUSR2) == ["SIGUSR2", "SIGINT"]
    both = StopFlags.observed({signal.SIGTERM: 0.0}, signal.SIGTERM, deadline=True, timed=[])
    assert both.encode() == [1, 1, 0, 1] and both.reasons(signal.SIGTERM) == ["SIGTERM", "SIGTERM", "deadline"]


def test_phases_keep_the_strings_stored_in_checkpoints():
    assert [phase.value for phase in Phase] == ["step", "train_end", "epoch_end"]
    assert Phase("train_end") is Phase.TRAIN_END


def test_a_snapshot_records_the_loop_position_and_the_rules_by_identity():
    rule = ModelCheckpoint(every_n_train_steps=2)
    progress = Progress(step=7, epoch=1, batch=3, metrics={"loss": 0.5}, epoch_rng={"torch": None})
    snapshot = progress.snapshot([rule], Phase.TRAIN_END)
    assert snapshot.loop == {"step": 7, "epoch": 1, "batch": 3, "phase": "train_end"}
    assert type(snapshot.loop["phase"]) is str
    assert snapshot.rules == {identity_key(rule.identity): rule.state_dict()}
    assert snapshot.epoch_rng == {"torch": None}
    assert Progress(step=7).snapshot([], Phase.STEP).epoch_rng is None  # at an epoch's start: nothing to recreate
    assert progress.candidates() == {"loss": 0.5, "epoch": 1, "step": 7}
