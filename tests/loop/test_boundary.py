"""The stop flags' layout in the vector every rank agrees on, and the phase strings on disk."""

from __future__ import annotations

import os
import signal

import pytest

from resilient.coordination import Deadline, DistInfo, SignalRecorder, StepAgreement
from resilient.loop._boundary import Boundaries, StopFlags
from resilient.loop._journal import Journal
from resilient.loop._progress import Phase, Progress
from resilient.rules import ModelCheckpoint, identity_key


def test_flags_encode_in_their_documented_order_and_decode_back():
    flags = StopFlags(warning=True, deadline=True, timed=(False, True))
    assert flags.encode() == [1, 0, 0, 1, 0, 0, 1]
    assert StopFlags.decode(flags.encode()) == flags
    assert StopFlags.decode([0, 1, 0, 0, 0]) == StopFlags(sigterm=True)
    assert StopFlags.decode([0, 0, 0, 0, 1, 1]) == StopFlags(written=True, timed=(True,))
    assert StopFlags.width(2) == 7 == len(flags.encode())


@pytest.mark.parametrize("vector", [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0],
                                    [0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1]])
def test_stopping_reads_only_the_stop_flags(vector):
    assert StopFlags.decode(vector).stopping == any(vector[:4])


def test_a_rank_s_view_names_the_signals_it_received():
    seen = StopFlags.observed({signal.SIGUSR2: 1.0, signal.SIGINT: 2.0}, signal.SIGUSR2, deadline=False,
                              written=False, timed=[True])
    assert seen == StopFlags(warning=True, sigint=True, timed=(True,))
    assert seen.signals(signal.SIGUSR2) == {signal.SIGUSR2, signal.SIGINT}
    assert seen.reasons(signal.SIGUSR2) == ["SIGUSR2", "SIGINT"]
    both = StopFlags.observed({signal.SIGTERM: 0.0}, signal.SIGTERM, deadline=True, written=True, timed=[])
    assert both.encode() == [1, 1, 0, 1, 1] and both.reasons(signal.SIGTERM) == ["SIGTERM", "SIGTERM", "deadline"]


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


class _Clock:
    """Monotonic seconds that move only when the test says so; counts its readings."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def _boundaries(tmp_path, rules, signals: SignalRecorder | None = None) -> Boundaries:
    dist = DistInfo(0, 1, 0, owns_group=False)
    time_rules = sum(rule.timed for rule in rules)
    signals = signals or SignalRecorder((signal.SIGUSR2, signal.SIGTERM, signal.SIGINT))
    return Boundaries(dist, rules, signals, signal.SIGUSR2,
                      Deadline(None, margin_s=20.0), StepAgreement(dist, StopFlags.width(time_rules)),
                      Journal(tmp_path, None, writes=False))


@pytest.mark.parametrize("start", [0, 1, 11, 250])
def test_a_step_boundary_fires_exactly_the_rules_whose_triggers_are_due(tmp_path, start):
    """Precomputing the next step due changes nothing: from any step a (resumed) run starts at,
    each boundary fires what asking every rule at every step fires."""
    clock = _Clock()
    rules = [ModelCheckpoint(every_n_train_steps=3), ModelCheckpoint(every_n_train_steps=5, monitor="loss"),
             ModelCheckpoint(train_time_interval="10s"), ModelCheckpoint(every_n_epochs=1)]
    for rule in rules:
        rule.bind(tmp_path, clock)
    boundaries = _boundaries(tmp_path, rules)
    for step in range(start + 1, start + 40):
        clock.now = 2.5 * (step - start)
        expected = [(rule, rule.time_due()) for rule in rules if rule.time_due() or rule.step_due(step)]
        fired, stop, written = boundaries.decide(Phase.STEP, step, 0, None, False)
        assert list(fired) == expected and stop is None and not written
        for rule, by_time in fired:  # the saver plans every rule that fired (a time save restarts its timer)
            rule.plan(step=step, epoch=0, metrics={"loss": 1.0}, exists=lambda path: False, time_fired=by_time)
    assert boundaries.decide(Phase.EPOCH_END, start + 40, 0, None, False) == ([(rules[3], False)], None, False)


def test_a_quiet_step_reads_no_clock_without_a_time_rule_and_a_signal_still_stops_at_the_next(tmp_path):
    clock = _Clock()
    rules = [ModelCheckpoint(every_n_train_steps=1000)]
    for rule in rules:
        rule.bind(tmp_path, clock)
    recorder = SignalRecorder((signal.SIGUSR2, signal.SIGTERM, signal.SIGINT))
    boundaries = _boundaries(tmp_path, rules, recorder)
    reads = clock.reads
    for step in range(1, 100):
        fired, stop, written = boundaries.decide(Phase.STEP, step, 0, None, False)
        assert not fired and stop is None and not written
    assert clock.reads == reads
    recorder.install(stacklevel=1)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        fired, stop, written = boundaries.decide(Phase.STEP, 100, 0, None, False)
    finally:
        recorder.uninstall()
    assert not fired and stop == StopFlags(warning=True) and not written


def test_a_finished_background_write_is_settled_at_the_boundary_that_sees_it_without_stopping(tmp_path):
    rules = [ModelCheckpoint(every_n_train_steps=1000)]
    for rule in rules:
        rule.bind(tmp_path, _Clock())
    boundaries = _boundaries(tmp_path, rules)
    for phase, settles in ((Phase.STEP, True), (Phase.EPOCH_END, True), (Phase.TRAIN_END, False)):
        fired, stop, written = boundaries.decide(phase, 1, 0, None, True)
        assert not fired and stop is None and written == settles  # after TRAIN_END, EPOCH_END comes at once


def test_one_process_agrees_with_itself_and_says_nothing_when_no_flag_is_set():
    agreement = StepAgreement(DistInfo(0, 1, 0, owns_group=False), width=StopFlags.width(1))
    assert agreement.exchange(None) is None
    assert agreement.exchange([0, 1, 0, 0, 1]) == [0, 1, 0, 0, 1]
    assert agreement.drain() is None
