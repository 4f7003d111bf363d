"""Checkpoint names must match Lightning's byte for byte, and never leave ``dirpath``."""

from __future__ import annotations

import os

import pytest

from resilient.rules import ModelCheckpoint

# (constructor kwargs, metrics, format_checkpoint_name filename argument, ver, expected name)
LIGHTNING_NAMES = [
    (
        {"filename": "sample-mnist-{epoch:02d}-{val_loss:.2f}"},
        {"epoch": 2, "val_loss": 0.3234},
        None,
        None,
        "sample-mnist-epoch=02-val_loss=0.32.ckpt",
    ),
    ({}, {"epoch": 0, "step": 100}, None, None, "epoch=0-step=100.ckpt"),
    ({}, {"epoch": 0, "step": 100}, None, 1, "epoch=0-step=100-v1.ckpt"),
    ({}, {"epoch": 0, "step": 100}, "last", None, "last.ckpt"),
    ({}, {"epoch": 2, "step": 7}, "{epoch}-last", 3, "epoch=2-last-v3.ckpt"),
    (
        {"filename": "epoch={epoch}-{val_loss:.3f}", "auto_insert_metric_name": False},
        {"epoch": 0, "val_loss": 0.3234},
        None,
        None,
        "epoch=0-0.323.ckpt",
    ),
    ({"filename": "{epoch:03d}"}, {"epoch": 5}, None, None, "epoch=005.ckpt"),
    (
        {"filename": "{epoch}-{val_loss}"},
        {"epoch": 1, "val_loss": 0.25},
        None,
        None,
        "epoch=1-val_loss=0.25.ckpt",
    ),
    # longest key first: "{epoch}" must not clobber the prefix of "{epoch_test}"
    (
        {"filename": "{epoch}-{epoch_test:.1f}"},
        {"epoch": 1, "epoch_test": 2.0},
        None,
        None,
        "epoch=1-epoch_test=2.0.ckpt",
    ),
    (
        {"filename": "{epoch_test:.1f}-{epoch}"},
        {"epoch": 1, "epoch_test": 2.0},
        None,
        None,
        "epoch_test=2.0-epoch=1.ckpt",
    ),
    ({"filename": "{epoch}-{epoch}"}, {"epoch": 1}, None, None, "epoch=1-epoch=1.ckpt"),
    # a metric missing at this boundary formats as the int 0, as in Lightning
    ({"filename": "{epoch}-{missing}"}, {"epoch": 3}, None, None, "epoch=3-missing=0.ckpt"),
    ({"filename": "{missing:.2f}"}, {}, None, None, "missing=0.00.ckpt"),
    ({"filename": "{step}"}, {"step": 0}, None, None, "step=0.ckpt"),
    ({"filename": "{val.loss:.1f}"}, {"val.loss": 0.5}, None, None, "val.loss=0.5.ckpt"),
    ({"filename": "best"}, {"epoch": 4}, None, None, "best.ckpt"),
    # deliberate improvement: the auto-inserted "val/loss" becomes "val_loss", no subdirectory
    (
        {"filename": "{epoch}-{val/loss:.2f}"},
        {"epoch": 0, "val/loss": 0.5},
        None,
        None,
        "epoch=0-val_loss=0.50.ckpt",
    ),
    (
        {"filename": "loss{val/loss:.2f}", "auto_insert_metric_name": False},
        {"val/loss": 0.5},
        None,
        None,
        "loss0.50.ckpt",
    ),
]


@pytest.mark.parametrize(("kwargs", "metrics", "filename", "ver", "expected"), LIGHTNING_NAMES)
def test_names_match_lightning(kwargs, metrics, filename, ver, expected):
    rule = ModelCheckpoint(**kwargs)
    assert rule.format_checkpoint_name(metrics, filename, ver=ver) == expected


def test_name_is_joined_with_absolute_dirpath(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rule = ModelCheckpoint(dirpath="ckpts")
    expected = os.path.join(os.path.realpath(tmp_path / "ckpts"), "epoch=1-step=9.ckpt")
    assert rule.format_checkpoint_name({"epoch": 1, "step": 9}) == expected


def test_metrics_are_not_mutated():
    metrics = {"epoch": 1}
    ModelCheckpoint(filename="{epoch}-{other}").format_checkpoint_name(metrics)
    assert metrics == {"epoch": 1}


@pytest.mark.parametrize(
    "template",
    [
        "/abs/{epoch}",
        "../{epoch}",
        "sub/../../{epoch}",
        "..\\{epoch}",
        "sub/{epoch}",
        "a\\{epoch}",
        "a\0b",
        "{epoch:/>3}",
    ],
)
def test_escaping_template_refused_at_construction(template):
    with pytest.raises(ValueError, match="filename"):
        ModelCheckpoint(filename=template)


@pytest.mark.parametrize(
    ("template", "extension"),
    [("../../etc/{epoch}", ".ckpt"), ("x/y", ".ckpt"), ("{epoch}\\z", ".ckpt"), ("..", "")],
)
def test_escaping_name_refused_at_format_time(tmp_path, template, extension):
    rule = ModelCheckpoint(dirpath=tmp_path)
    rule.FILE_EXTENSION = extension
    with pytest.raises(ValueError, match="filename"):
        rule.format_checkpoint_name({"epoch": 0}, template)


@pytest.mark.parametrize("template", ["{val_loss:02d}", "{epoch", "{epoch:.2q}", "{}"])
def test_unformattable_template_refused_at_construction(template):
    with pytest.raises(ValueError, match="filename"):
        ModelCheckpoint(filename=template)


def test_int_spec_for_metric_explains_the_types():
    with pytest.raises(ValueError, match=r"val_loss.*float"):
        ModelCheckpoint(filename="{epoch:02d}-{val_loss:02d}")


def test_runtime_format_error_names_filename():
    rule = ModelCheckpoint(filename="{epoch:02d}")
    with pytest.raises(ValueError, match="filename"):
        rule.format_checkpoint_name({"epoch": "not a number"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filename": ".hidden"},
        {"filename": "."},
        {"filename": ".{epoch}"},
        {"filename": "{epoch:.>4}", "auto_insert_metric_name": False},
    ],
)
def test_hidden_name_refused_at_construction(kwargs):
    """Unfinished checkpoints live under dot-names: a checkpoint there would be cleaned away."""
    with pytest.raises(ValueError, match=r"^filename .* a hidden name"):
        ModelCheckpoint(**kwargs)


def test_template_too_long_even_with_zeros_refused_at_construction():
    with pytest.raises(ValueError, match=r"^filename 'x+\.\.\. \(210 characters\) formats to 208 bytes"):
        ModelCheckpoint(filename="x" * 200 + "-{epoch}")


def test_name_too_long_for_the_file_system_is_shortened_and_still_usable(tmp_path):
    """A metric of 1e300 in '{val_loss:.2f}' gives a 300-digit name; saving it must not fail."""
    rule = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}-{val_loss:.2f}", monitor="val_loss")
    metrics = {"epoch": 3, "val_loss": 1e300}
    with pytest.warns(UserWarning, match=r"longer than a file name may be; saved as 'epoch=3-val_loss=1000"):
        path = rule.format_checkpoint_name(metrics)
    name = os.path.basename(path)
    assert name.startswith("epoch=3-val_loss=1000") and name.endswith(".ckpt")
    assert len(os.fsencode(name)) <= 200
    with pytest.warns(UserWarning):
        assert rule.format_checkpoint_name(metrics) == path, "the same metrics must give the same name"
        versioned = rule.format_checkpoint_name(metrics, ver=1)
        other = rule.format_checkpoint_name({**metrics, "val_loss": 1.5e300})
    assert versioned == path.removesuffix(".ckpt") + "-v1.ckpt"
    assert other != path, "names sharing their start are kept apart by the hash of the whole"
    # what the atomic writer does with it: a dot-name beside it, then the name itself
    os.mkdir(tmp_path / f".{os.path.basename(versioned)}.tmp-{'0' * 12}")
    os.mkdir(versioned)


def test_long_non_ascii_name_is_cut_on_a_character_boundary(tmp_path):
    rule = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}-é{loss:.1f}")
    with pytest.warns(UserWarning):
        name = os.path.basename(rule.format_checkpoint_name({"epoch": 0, "loss": 1e250}))
    assert "\ufffd" not in name and len(os.fsencode(name)) <= 200
    os.mkdir(tmp_path / name)
