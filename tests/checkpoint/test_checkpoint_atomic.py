"""Removing, linking and recovering after crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import resilient.checkpoint
from resilient.checkpoint import (
    find_checkpoints,
    link_checkpoint,
    read_manifest,
    recover_directory,
    remove_checkpoint,
    verify,
)


def test_remove_deletes_a_directory_unlinks_a_symlink_and_ignores_missing(tmp_path, save):
    save(tmp_path / "a.ckpt")
    save(tmp_path / "b.ckpt")
    (tmp_path / "last.ckpt").symlink_to("b.ckpt")
    remove_checkpoint(tmp_path / "a.ckpt")
    remove_checkpoint(tmp_path / "last.ckpt")
    remove_checkpoint(tmp_path / "never.ckpt")
    assert os.listdir(tmp_path) == ["b.ckpt"]
    verify(tmp_path / "b.ckpt", full=True)


def test_link_is_relative_and_replaces_a_link_or_a_real_checkpoint(tmp_path, save):
    save(tmp_path / "ckpts" / "a.ckpt", step=1)
    save(tmp_path / "ckpts" / "b.ckpt", step=2)
    save(tmp_path / "other" / "last.ckpt", step=0)
    last = tmp_path / "other" / "last.ckpt"
    link_checkpoint(last, tmp_path / "ckpts" / "a.ckpt")
    assert os.readlink(last) == os.path.join("..", "ckpts", "a.ckpt") and read_manifest(last).step == 1
    link_checkpoint(last, tmp_path / "ckpts" / "b.ckpt")
    assert os.readlink(last) == os.path.join("..", "ckpts", "b.ckpt")
    assert os.listdir(tmp_path / "other") == ["last.ckpt"]
    assert sorted(os.listdir(tmp_path / "ckpts")) == ["a.ckpt", "b.ckpt"]


def test_link_refuses_a_missing_target_and_a_link_onto_itself(tmp_path, save):
    save(tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match=r"target .*missing\.ckpt does not exist"):
        link_checkpoint(tmp_path / "last.ckpt", tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="same path"):
        link_checkpoint(tmp_path / "a.ckpt", tmp_path / "a.ckpt")
    assert os.listdir(tmp_path) == ["a.ckpt"]


def test_recover_removes_temporaries_and_unfinished_deletions_only(tmp_path, save):
    save(tmp_path / "a.ckpt", step=1)
    save(tmp_path / "gone.ckpt", step=1)
    os.rename(tmp_path / "gone.ckpt", tmp_path / ".gone.ckpt.del-00ff")
    (tmp_path / ".a.ckpt.tmp-12ab").mkdir()
    (tmp_path / ".b.ckpt.tmp-34cd").symlink_to("a.ckpt")
    (tmp_path / ".keep").write_text("someone else's")
    (tmp_path / ".notes.tmp-aa").write_text("not a checkpoint name")
    recover_directory(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".keep", ".notes.tmp-aa", "a.ckpt"]
    verify(tmp_path / "a.ckpt", full=True)


def _interrupted_replace(tmp_path, save, *, complete: bool):
    """The state a crash leaves between 'old moved aside' and 'temp renamed into place'."""
    save(tmp_path / "last.ckpt", step=1)
    os.rename(tmp_path / "last.ckpt", tmp_path / ".last.ckpt.old-aaaa")
    save(tmp_path / "staging" / "last.ckpt", step=2)
    os.rename(tmp_path / "staging" / "last.ckpt", tmp_path / ".last.ckpt.tmp-bbbb")
    os.rmdir(tmp_path / "staging")
    if not complete:
        (tmp_path / ".last.ckpt.tmp-bbbb" / "MANIFEST.json").unlink()


def test_recover_rolls_an_interrupted_replace_forward_when_the_new_one_is_complete(tmp_path, save):
    _interrupted_replace(tmp_path, save, complete=True)
    recover_directory(tmp_path)
    assert os.listdir(tmp_path) == ["last.ckpt"] and verify(tmp_path / "last.ckpt", full=True).step == 2


def test_recover_rolls_an_interrupted_replace_back_when_the_new_one_is_incomplete(tmp_path, save):
    _interrupted_replace(tmp_path, save, complete=False)
    recover_directory(tmp_path)
    assert os.listdir(tmp_path) == ["last.ckpt"] and verify(tmp_path / "last.ckpt", full=True).step == 1


def test_recover_deletes_the_old_copy_when_the_replace_had_finished(tmp_path, save):
    _interrupted_replace(tmp_path, save, complete=True)
    save(tmp_path / "last.ckpt", step=3)
    recover_directory(tmp_path)
    assert os.listdir(tmp_path) == ["last.ckpt"] and read_manifest(tmp_path / "last.ckpt").step == 3


def test_recover_rolls_an_interrupted_link_replacement_forward(tmp_path, save):
    save(tmp_path / "a.ckpt", step=4)
    save(tmp_path / "last.ckpt", step=1)
    os.rename(tmp_path / "last.ckpt", tmp_path / ".last.ckpt.old-aaaa")
    (tmp_path / ".last.ckpt.tmp-bbbb").symlink_to("a.ckpt")
    recover_directory(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt", "last.ckpt"]
    assert os.readlink(tmp_path / "last.ckpt") == "a.ckpt"


def test_recover_accepts_a_missing_directory(tmp_path):
    recover_directory(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_a_process_killed_mid_write_leaves_nothing_discoverable(tmp_path, save):
    save(tmp_path / "last.ckpt", step=1)
    child = textwrap.dedent(
        f"""
        import os, torch
        from pathlib import Path
        from resilient.checkpoint import write_checkpoint

        class DiesWhilePickled:
            def __reduce__(self):
                os._exit(17)  # no exception handler, no cleanup: like SIGKILL

        state = {{"w": torch.ones(1000), "boom": DiesWhilePickled()}}
        write_checkpoint([(Path({str(tmp_path)!r}) / "last.ckpt", "last")], {{"state.pt": state}},
                         step=2, epoch=0, metrics={{}}, world_size=1)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(resilient.checkpoint.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True)
    assert result.returncode == 17, result.stderr
    assert any(name.startswith(".last.ckpt.tmp-") for name in os.listdir(tmp_path))
    assert [(path.name, manifest.step) for path, manifest in find_checkpoints([tmp_path])] == [("last.ckpt", 1)]
    recover_directory(tmp_path)
    assert os.listdir(tmp_path) == ["last.ckpt"] and verify(tmp_path / "last.ckpt", full=True).step == 1
