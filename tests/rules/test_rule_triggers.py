"""When a rule is due: steps, epochs, and wall-clock time on an injectable clock."""

from __future__ import annotations

import pytest

from resilient.rules import ModelCheckpoint


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def timed(tmp_path, clock, interval="10m", **kwargs) -> ModelCheckpoint:
    rule = ModelCheckpoint(dirpath=tmp_path, train_time_interval=interval, **kwargs)
    rule.bind(tmp_path, clock=clock)
    return rule


def plan(rule, step, *, time_fired=True):
    return rule.plan(
        step=step, epoch=0, metrics={}, exists=lambda path: False, time_fired=time_fired
    )


def test_step_rule_due_on_multiples():
    rule = ModelCheckpoint(every_n_train_steps=3)
    assert [s for s in range(1, 10) if rule.step_due(s)] == [3, 6, 9]
    assert not any(ModelCheckpoint().step_due(s) for s in range(1, 10))


@pytest.mark.parametrize("every", [0, 1, 3, 7])
def test_the_next_step_due_is_the_first_later_step_at_which_the_rule_is_due(every):
    rule = ModelCheckpoint(every_n_train_steps=every)
    for step in range(30):
        due = [s for s in range(step + 1, step + 10) if rule.step_due(s)]
        assert rule.next_step_due(step) == (due[0] if due else None)


def test_epoch_rule_due_after_every_nth_epoch():
    rule = ModelCheckpoint(every_n_epochs=2)
    assert [e for e in range(6) if rule.epoch_due(e)] == [1, 3, 5]
    assert all(ModelCheckpoint().epoch_due(e) for e in range(3))  # Lightning's default
    assert not any(ModelCheckpoint(every_n_train_steps=5).epoch_due(e) for e in range(3))


def test_combined_triggers_are_each_due():
    rule = ModelCheckpoint(every_n_train_steps=4, every_n_epochs=2)
    assert rule.step_due(8) and not rule.step_due(6)
    assert rule.epoch_due(1) and not rule.epoch_due(0)


def test_time_rule_due_only_after_the_interval(tmp_path):
    clock = FakeClock(100.0)
    rule = timed(tmp_path, clock)
    clock.now = 699.0
    assert not rule.time_due()
    clock.now = 700.0
    assert rule.time_due()
    assert rule.time_due()  # asking does not reset


def test_time_rule_resets_only_after_a_time_save(tmp_path):
    clock = FakeClock()
    rule = timed(tmp_path, clock)
    clock.now = 650.0
    plan(rule, 1, time_fired=False)  # a save for another reason keeps the timer running
    assert rule.time_due()
    plan(rule, 2)
    assert not rule.time_due()
    clock.now = 650.0 + 599.0
    assert not rule.time_due()
    clock.now = 650.0 + 600.0
    assert rule.time_due()


def test_time_reset_skipped_with_the_save_at_an_already_saved_step(tmp_path):
    clock = FakeClock()
    rule = timed(tmp_path, clock)
    clock.now = 600.0
    plan(rule, 1)
    clock.now = 1300.0
    assert plan(rule, 1).save == []
    assert rule.time_due()


def test_elapsed_time_survives_state_dict(tmp_path):
    clock = FakeClock()
    rule = timed(tmp_path, clock)
    clock.now = 600.0
    plan(rule, 1)
    clock.now = 900.0  # 300 s into the next interval when the job is preempted
    state = rule.state_dict()

    restarted_clock = FakeClock(5.0)  # a new machine: its monotonic clock means nothing to us
    restarted = timed(tmp_path, restarted_clock)
    restarted.load_state_dict(state)
    restarted_clock.now = 5.0 + 299.0
    assert not restarted.time_due()
    restarted_clock.now = 5.0 + 300.0
    assert restarted.time_due()


def test_elapsed_time_survives_loading_before_bind(tmp_path):
    clock = FakeClock()
    rule = timed(tmp_path, clock)
    clock.now = 450.0
    state = rule.state_dict()

    restarted = ModelCheckpoint(dirpath=tmp_path, train_time_interval="10m")
    restarted.load_state_dict(state)
    assert restarted.state_dict()["seconds_since_time_save"] == 450.0
    restarted_clock = FakeClock(1000.0)
    restarted.bind(tmp_path, clock=restarted_clock)
    restarted_clock.now = 1149.0
    assert not restarted.time_due()
    restarted_clock.now = 1150.0
    assert restarted.time_due()


@pytest.mark.parametrize("kwargs", [{}, {"every_n_train_steps": 1}])
def test_time_rule_never_due_without_an_interval_or_before_bind(tmp_path, kwargs):
    rule = ModelCheckpoint(dirpath=tmp_path, **kwargs)
    rule.bind(tmp_path, clock=FakeClock(1e9))
    assert not rule.time_due()
    assert not ModelCheckpoint(train_time_interval="1s").time_due()
