"""Constructor: Lightning's defaults, and every bad argument refused with its name."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest

from resilient.rules import ModelCheckpoint

INVALID = [
    # (kwargs, exception type, text the message must contain)
    ({"dirpath": ""}, ValueError, "dirpath"),
    ({"dirpath": 5}, TypeError, "dirpath"),
    ({"dirpath": b"bytes"}, TypeError, "dirpath"),
    ({"dirpath": "a\0b"}, ValueError, "dirpath"),
    ({"filename": 3}, TypeError, "filename"),
    ({"filename": "/abs/{epoch}"}, ValueError, "filename"),
    ({"filename": "x/../{epoch}"}, ValueError, "filename"),
    ({"filename": "a\0b"}, ValueError, "filename"),
    ({"monitor": 1}, TypeError, "monitor"),
    ({"monitor": ""}, ValueError, "monitor"),
    ({"verbose": 1}, TypeError, "verbose"),
    ({"save_last": "yes"}, ValueError, "save_last"),
    ({"save_last": 1}, TypeError, "save_last"),
    ({"save_top_k": -2, "monitor": "m"}, ValueError, "save_top_k"),
    ({"save_top_k": 2.0, "monitor": "m"}, TypeError, "save_top_k"),
    ({"save_top_k": True}, TypeError, "save_top_k"),
    ({"save_top_k": None}, TypeError, "save_top_k"),
    ({"save_top_k": 3}, ValueError, "save_top_k=3 needs a monitor"),
    ({"save_weights_only": "no"}, TypeError, "save_weights_only"),
    ({"mode": "avg"}, ValueError, "mode"),
    ({"mode": None}, TypeError, "mode"),
    ({"auto_insert_metric_name": None}, TypeError, "auto_insert_metric_name"),
    ({"every_n_train_steps": -1}, ValueError, "every_n_train_steps"),
    ({"every_n_train_steps": True}, TypeError, "every_n_train_steps"),
    ({"every_n_train_steps": "5"}, TypeError, "every_n_train_steps"),
    ({"every_n_epochs": -1}, ValueError, "every_n_epochs"),
    ({"every_n_epochs": False}, TypeError, "every_n_epochs"),
    ({"every_n_epochs": 1.5}, TypeError, "every_n_epochs"),
    ({"train_time_interval": "soon"}, ValueError, "train_time_interval"),
    ({"train_time_interval": "0m"}, ValueError, "train_time_interval"),
    ({"train_time_interval": timedelta(seconds=-5)}, ValueError, "train_time_interval"),
    ({"train_time_interval": 60}, TypeError, "train_time_interval"),
    ({"save_on_train_epoch_end": "true"}, TypeError, "save_on_train_epoch_end"),
    ({"enable_version_counter": 0}, TypeError, "enable_version_counter"),
]


@pytest.mark.parametrize(("kwargs", "error", "text"), INVALID)
def test_invalid_argument_names_the_parameter(kwargs, error, text):
    with pytest.raises(error, match=f"^{text}") as info:
        ModelCheckpoint(**kwargs)
    assert type(info.value) is error


def test_lightning_defaults():
    rule = ModelCheckpoint()
    assert rule.dirpath is None and rule.filename is None and rule.monitor is None
    assert (rule.save_top_k, rule.mode, rule.save_last) == (1, "min", None)
    assert (rule.every_n_epochs, rule.every_n_train_steps, rule.train_time_interval) == (1, 0, None)
    assert (rule.best_model_path, rule.best_model_score, rule.best_k_models) == ("", None, {})
    assert (rule.kth_best_model_path, rule.last_model_path, rule.current_score) == ("", "", None)
    assert rule.kth_value == math.inf
    assert ModelCheckpoint(monitor="acc", mode="max").kth_value == -math.inf
    assert (rule.CHECKPOINT_JOIN_CHAR, rule.CHECKPOINT_EQUALS_CHAR) == ("-", "=")
    assert (rule.CHECKPOINT_NAME_LAST, rule.FILE_EXTENSION, rule.STARTING_VERSION) == (
        "last",
        ".ckpt",
        1,
    )


def test_any_explicit_trigger_disables_the_epoch_default():
    assert ModelCheckpoint(every_n_train_steps=10).every_n_epochs == 0
    rule = ModelCheckpoint(train_time_interval="1h30m")
    assert (rule.every_n_epochs, rule.train_time_interval) == (0, timedelta(minutes=90))


def test_triggers_may_be_combined():
    rule = ModelCheckpoint(every_n_train_steps=5, every_n_epochs=2, train_time_interval="30m")
    assert (rule.every_n_train_steps, rule.every_n_epochs) == (5, 2)
    assert rule.train_time_interval == timedelta(minutes=30)


def test_dirpath_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ModelCheckpoint(dirpath=Path("ckpts")).dirpath == str(Path.cwd().resolve() / "ckpts")


def test_empty_filename_means_default_template_like_lightning():
    rule = ModelCheckpoint(filename="")
    assert rule.filename is None
    assert rule.format_checkpoint_name({"epoch": 1, "step": 2}) == "epoch=1-step=2.ckpt"


def test_flags_for_the_run_loop():
    rule = ModelCheckpoint(save_weights_only=True, save_on_train_epoch_end=True)
    assert rule.weights_only and rule.epoch_end_on_train
    assert not ModelCheckpoint().weights_only
    assert not ModelCheckpoint(save_on_train_epoch_end=None).epoch_end_on_train


def test_key_is_stable_and_ignores_dirpath(tmp_path):
    a = ModelCheckpoint(dirpath=tmp_path / "a", monitor="val", train_time_interval="30m")
    b = ModelCheckpoint(
        dirpath=tmp_path / "b", monitor="val", train_time_interval=timedelta(minutes=30)
    )
    assert a.identity == b.identity
    assert list(a.identity.items())[:3] == [("kind", "ModelCheckpoint"), ("monitor", "val"), ("mode", "min")]


@pytest.mark.parametrize(
    "change",
    [
        {"monitor": "loss"},
        {"mode": "max"},
        {"every_n_train_steps": 7},
        {"every_n_epochs": 2},
        {"train_time_interval": "1h"},
        {"filename": "{epoch}"},
    ],
)
def test_key_differs_when_identity_differs(change):
    base = {"monitor": "val"}
    assert ModelCheckpoint(**base).identity != ModelCheckpoint(**{**base, **change}).identity
