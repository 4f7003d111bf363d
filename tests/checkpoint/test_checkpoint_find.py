from __future__ import annotations

import os
import re
import warnings

import pytest

from resilient.checkpoint import find_checkpoints, link_checkpoint


def test_newest_first_by_step_then_creation_time(tmp_path, save, rewrite_manifest):
    save(tmp_path / "early.ckpt", step=5)
    save(tmp_path / "late.ckpt", step=5)
    save(tmp_path / "other" / "high.ckpt", step=10)
    rewrite_manifest(tmp_path / "early.ckpt", created=100.0)
    rewrite_manifest(tmp_path / "late.ckpt", created=200.0)
    rewrite_manifest(tmp_path / "other" / "high.ckpt", created=50.0)
    found = find_checkpoints([tmp_path, tmp_path / "other", tmp_path / "missing"])
    assert [path.name for path, _ in found] == ["high.ckpt", "late.ckpt", "early.ckpt"]
    assert [manifest.step for _, manifest in found] == [10, 5, 5]


def test_a_corrupt_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, save):
    save(tmp_path / "good.ckpt", step=1)
    save(tmp_path / "bad.ckpt", step=2)
    payload = tmp_path / "bad.ckpt" / "state.pt"
    payload.write_bytes(payload.read_bytes()[:100])
    with pytest.warns(UserWarning, match=re.escape(str(tmp_path / "bad.ckpt")) + ".*state.pt has 100 bytes"):
        found = find_checkpoints([tmp_path])
    assert [path.name for path, _ in found] == ["good.ckpt"]


def test_symlinks_are_resolved_and_reported_once(tmp_path, save):
    save(tmp_path / "runs" / "a.ckpt", step=3)
    link_checkpoint(tmp_path / "runs" / "last.ckpt", tmp_path / "runs" / "a.ckpt")
    found = find_checkpoints([tmp_path / "runs", tmp_path / "runs"])
    assert [(path, manifest.step) for path, manifest in found] == [((tmp_path / "runs" / "a.ckpt").resolve(), 3)]


def test_dot_entries_and_other_names_are_ignored_silently(tmp_path, save):
    save(tmp_path / "a.ckpt", step=1)
    save(tmp_path / "hidden.ckpt", step=9)
    os.rename(tmp_path / "hidden.ckpt", tmp_path / ".hidden.ckpt")
    (tmp_path / ".a.ckpt.tmp-0123abcd").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "job.yaml.ckpt-notes").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = find_checkpoints([tmp_path])
    assert [path.name for path, _ in found] == ["a.ckpt"]


def test_a_single_path_instead_of_a_list_is_refused(tmp_path):
    with pytest.raises(TypeError, match="dirs"):
        find_checkpoints(tmp_path)
