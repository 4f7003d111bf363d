"""A run's rules together: one identity per rule, no two writing the same files, none in emergency/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resilient.rules import ModelCheckpoint, RuleConflict, check_rule_set


def check(tmp_path: Path, *rules: ModelCheckpoint) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    check_rule_set(rules, default_dirpath=checkpoints, emergency_dir=checkpoints / "emergency")


def conflict(tmp_path: Path, *rules: ModelCheckpoint) -> RuleConflict:
    with pytest.raises(RuleConflict) as caught:
        check(tmp_path, *rules)
    assert isinstance(caught.value, ValueError), "Run's callers catch ValueError"
    return caught.value


def test_rules_that_differ_pass(tmp_path):
    check(
        tmp_path,
        ModelCheckpoint(every_n_train_steps=100),
        ModelCheckpoint(monitor="val_loss", save_top_k=3, save_last=True),
        ModelCheckpoint(dirpath=tmp_path / "elsewhere", filename="{step}", every_n_epochs=2),
    )


def test_the_same_identity_in_other_directories_is_refused(tmp_path):
    """The key leaves dirpath out so that a moved run resumes: two such rules could not be told apart."""
    error = conflict(
        tmp_path,
        ModelCheckpoint(dirpath=tmp_path / "a", every_n_train_steps=10),
        ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=10),
    )
    assert (error.index, error.parameter) == (1, None)
    assert str(error).startswith(
        "checkpoint[1]: has the same monitor, mode, triggers and filename as checkpoint[0]"
    )


def test_the_same_files_without_the_version_counter_are_refused(tmp_path):
    error = conflict(
        tmp_path,
        ModelCheckpoint(filename="model", every_n_epochs=1),
        ModelCheckpoint(filename="model", every_n_train_steps=50, enable_version_counter=False),
    )
    assert (error.index, error.parameter) == (1, "filename")
    assert "without the version counter" in str(error)


def test_a_default_dirpath_and_the_same_directory_written_out_are_one_directory(tmp_path):
    error = conflict(
        tmp_path,
        ModelCheckpoint(filename="model", every_n_epochs=1, enable_version_counter=False),
        ModelCheckpoint(dirpath=tmp_path / "run" / "checkpoints", filename="model", every_n_epochs=2),
    )
    assert error.index == 1


def test_two_last_files_in_one_directory_without_the_counter_are_refused(tmp_path):
    error = conflict(
        tmp_path,
        ModelCheckpoint(save_last=True, every_n_epochs=1, enable_version_counter=False),
        ModelCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=7),
    )
    assert (error.index, error.parameter) == (1, "dirpath")
    assert "writes 'last' checkpoints" in str(error)


def test_the_same_files_with_the_version_counter_pass(tmp_path):
    check(
        tmp_path,
        ModelCheckpoint(filename="model", every_n_epochs=1, save_last=True),
        ModelCheckpoint(filename="model", every_n_train_steps=50, save_last=True),
    )


@pytest.mark.parametrize("inside", ["", "mine", "a/b"])
def test_a_dirpath_in_the_emergency_directory_is_refused(tmp_path, inside):
    dirpath = os.path.join(tmp_path, "run", "checkpoints", "emergency", inside)
    error = conflict(tmp_path, ModelCheckpoint(every_n_epochs=1), ModelCheckpoint(dirpath=dirpath))
    assert (error.index, error.parameter) == (1, "dirpath")
    assert "where the run keeps its emergency checkpoints" in str(error)


def test_the_emergency_directory_is_found_through_symbolic_links(tmp_path):
    (tmp_path / "run" / "checkpoints" / "emergency").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "run")
    error = conflict(tmp_path, ModelCheckpoint(dirpath=tmp_path / "link" / "checkpoints" / "emergency"))
    assert error.index == 0
