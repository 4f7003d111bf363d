"""The public contract `Run` drives rules through, the interval timer, and a rule's identity.

A rule's identity is plain JSON in new checkpoints; older checkpoints stored a Python repr,
which must still match the same rule (rebuilt from the mapping, never parsed).
"""

from __future__ import annotations

import json
from datetime import timedelta

from resilient.rules import (
    CheckpointRule,
    IntervalTimer,
    ModelCheckpoint,
    identity_key,
    same_rule,
    saved_state,
)
from resilient.rules._identity import legacy_key

# What resilient wrote before identities were mappings, for ModelCheckpoint(monitor="val", train_time_interval="30m").
_OLD_KEY = ("ModelCheckpoint{'monitor': 'val', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 0, "
            "'train_time_interval': datetime.timedelta(seconds=1800), 'filename': None}")


def test_model_checkpoint_implements_the_contract():
    assert isinstance(ModelCheckpoint(), CheckpointRule)
    assert not isinstance(object(), CheckpointRule)


def test_identity_is_plain_json():
    rule = ModelCheckpoint(monitor="val", every_n_train_steps=5, train_time_interval="30m", filename="{step}")
    assert json.loads(json.dumps(rule.identity)) == rule.identity == {
        "kind": "ModelCheckpoint", "monitor": "val", "mode": "min", "every_n_train_steps": 5, "every_n_epochs": 0,
        "train_time_interval_s": 1800.0, "filename": "{step}",
    }


def test_an_old_repr_identity_matches_its_rule_without_parsing():
    rule = ModelCheckpoint(monitor="val", train_time_interval="30m")
    assert legacy_key(rule.identity) == _OLD_KEY
    assert legacy_key(ModelCheckpoint().identity) == (
        "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
        "'train_time_interval': None, 'filename': None}")
    assert same_rule(_OLD_KEY, rule.identity) and same_rule(dict(rule.identity), rule.identity)
    assert not same_rule(_OLD_KEY, ModelCheckpoint(monitor="val").identity)
    assert not same_rule("emergency", rule.identity)
    assert legacy_key({"kind": "Other", "every": 3}) is None


def test_bookkeeping_is_found_under_either_key():
    rule = ModelCheckpoint(monitor="val", train_time_interval="30m")
    assert saved_state({identity_key(rule.identity): {"new": 1}}, rule.identity) == {"new": 1}
    assert saved_state({_OLD_KEY: {"old": 1}}, rule.identity) == {"old": 1}
    assert saved_state({_OLD_KEY: {"old": 1}}, ModelCheckpoint().identity) is None


def test_interval_timer_fires_after_the_interval_and_restarts():
    now = [100.0]
    timer = IntervalTimer(timedelta(seconds=10))
    assert not timer.due() and timer.elapsed() == 0.0  # unbound: never due
    timer.bind(lambda: now[0])
    now[0] += 9.5
    assert not timer.due()
    now[0] += 0.5
    assert timer.due() and timer.due()  # asking does not restart
    timer.restart()
    assert not timer.due() and timer.elapsed() == 0.0


def test_interval_timer_elapsed_time_survives_a_restart_on_another_clock():
    timer = IntervalTimer(timedelta(seconds=10))
    timer.bind(lambda: 50.0)
    resumed = IntervalTimer(timedelta(seconds=10))
    resumed.resume(7.0)  # recorded by the earlier run, before this one has a clock
    assert resumed.elapsed() == 7.0
    now = [1e6]
    resumed.bind(lambda: now[0])
    assert resumed.elapsed() == 7.0 and not resumed.due()
    now[0] += 3.0
    assert resumed.due()
    resumed.resume(1.0)  # a bound timer re-anchors at once
    assert resumed.elapsed() == 1.0


def test_no_interval_is_never_due():
    timer = IntervalTimer(None)
    timer.bind(lambda: 1e9)
    assert not timer.due()
