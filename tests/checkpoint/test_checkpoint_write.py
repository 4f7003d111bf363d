from __future__ import annotations

import errno
import os
import time

import pytest
import torch
import xxhash

from resilient._version import __version__
from resilient.checkpoint import (
    MANIFEST_NAME,
    CheckpointWriteError,
    find_checkpoints,
    load_files,
    read_manifest,
    recover_directory,
    verify,
    write_checkpoint,
)


class Unserializable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def _payload() -> dict[str, object]:
    return {
        "state.pt": {"model": {"w": torch.randn(8, 4), "inner": {"b": torch.arange(5)}}, "misc": [1, 2.5, "x"]},
        "rank-00000.pt": {"rng": torch.get_rng_state()},
    }


def test_round_trip_of_nested_tensors_and_manifest_fields(tmp_path):
    before = time.time()
    payload = _payload()
    [manifest] = write_checkpoint(
        [(tmp_path / "epoch=02.ckpt", "top_k")], payload, step=7, epoch=2, metrics={"val_loss": 0.5}, world_size=3
    )
    loaded = load_files(tmp_path / "epoch=02.ckpt", ["state.pt", "rank-00000.pt"])
    assert torch.equal(loaded["state.pt"]["model"]["w"], payload["state.pt"]["model"]["w"])
    assert torch.equal(loaded["state.pt"]["model"]["inner"]["b"], torch.arange(5))
    assert loaded["state.pt"]["misc"] == [1, 2.5, "x"]
    assert torch.equal(loaded["rank-00000.pt"]["rng"], payload["rank-00000.pt"]["rng"])
    assert (manifest.step, manifest.epoch, manifest.world_size) == (7, 2, 3)
    assert (manifest.kind, manifest.rule) == ("full", "top_k")
    assert manifest.metrics == {"val_loss": 0.5} and manifest.package_version == __version__
    assert before <= manifest.created <= time.time()
    for name, entry in manifest.files.items():
        data = (tmp_path / "epoch=02.ckpt" / name).read_bytes()
        assert entry.size == len(data) and entry.checksum == xxhash.xxh3_128_hexdigest(data)
    assert read_manifest(tmp_path / "epoch=02.ckpt") == manifest
    assert sorted(os.listdir(tmp_path)) == ["epoch=02.ckpt"]


def test_several_targets_share_payload_inodes_and_name_their_rule(tmp_path):
    targets = [
        (tmp_path / "a.ckpt", "top_k"),
        (tmp_path / "b.ckpt", "every_n"),
        (tmp_path / "new" / "dir" / "last.ckpt", "last"),
    ]
    manifests = write_checkpoint(targets, _payload(), step=1, epoch=0, metrics={}, world_size=1, kind="weights")
    assert [m.rule for m in manifests] == ["top_k", "every_n", "last"]
    for path, rule in targets:
        assert read_manifest(path).rule == rule and read_manifest(path).kind == "weights"
        verify(path, full=True)
    for name in ("state.pt", "rank-00000.pt"):
        assert len({(path / name).stat().st_ino for path, _ in targets}) == 1
    assert len({(path / MANIFEST_NAME).stat().st_ino for path, _ in targets}) == 3


def _write_pair(tmp_path) -> None:
    targets = [(tmp_path / "a.ckpt", "r"), (tmp_path / "b.ckpt", "r")]
    write_checkpoint(targets, _payload(), step=1, epoch=0, metrics={}, world_size=1)


def test_targets_are_copied_when_hard_links_fail(tmp_path, no_hard_links):
    _write_pair(tmp_path)
    assert (tmp_path / "a.ckpt" / "state.pt").stat().st_ino != (tmp_path / "b.ckpt" / "state.pt").stat().st_ino
    verify(tmp_path / "b.ckpt", full=True)


def test_overwriting_replaces_the_checkpoint_and_leaves_no_leftovers(tmp_path, save):
    save(tmp_path / "last.ckpt", step=1)
    save(tmp_path / "last.ckpt", step=2, files={"other.pt": torch.zeros(3)})
    assert read_manifest(tmp_path / "last.ckpt").step == 2
    assert sorted(os.listdir(tmp_path / "last.ckpt")) == [MANIFEST_NAME, "other.pt"]
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_overwriting_a_symlink_replaces_the_link_not_its_target(tmp_path, save):
    save(tmp_path / "a.ckpt", step=1)
    (tmp_path / "last.ckpt").symlink_to("a.ckpt")
    save(tmp_path / "last.ckpt", step=2)
    assert not (tmp_path / "last.ckpt").is_symlink() and read_manifest(tmp_path / "last.ckpt").step == 2
    assert verify(tmp_path / "a.ckpt", full=True).step == 1
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt", "last.ckpt"]


def test_an_error_while_serializing_leaves_nothing(tmp_path):
    targets = [(tmp_path / "a.ckpt", "r"), (tmp_path / "sub" / "b.ckpt", "r")]
    files = {"state.pt": {"w": torch.ones(3)}, "rank-00000.pt": Unserializable()}
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        write_checkpoint(targets, files, step=1, epoch=0, metrics={}, world_size=1)
    assert os.listdir(tmp_path) == []
    assert find_checkpoints([tmp_path]) == []


def test_an_error_in_a_later_target_leaves_no_temporaries(tmp_path, no_hard_links, monkeypatch):
    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("shutil.copyfileobj", no_space)
    with pytest.raises(CheckpointWriteError, match=rf"{tmp_path / 'b.ckpt'}: No space left") as caught:
        _write_pair(tmp_path)
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_a_failed_replace_puts_the_old_checkpoint_back(tmp_path, save, monkeypatch):
    save(tmp_path / "last.ckpt", step=1)
    real_rename = os.rename

    def failing_rename(source, destination):
        if ".tmp-" in os.fspath(source):
            raise OSError(errno.EIO, "I/O error")
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="I/O error"):
        save(tmp_path / "last.ckpt", step=2)
    assert verify(tmp_path / "last.ckpt", full=True).step == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"targets": []}, ValueError, "targets"),
        ({"targets": [("a.pt", "r")]}, ValueError, r"targets.*\.ckpt"),
        ({"targets": [("a.ckpt", "")]}, ValueError, "targets.*rule"),
        ({"targets": [(".a.ckpt", "r")]}, ValueError, "targets.*'.'"),
        ({"targets": [("a.ckpt", "r"), ("./a.ckpt", "s")]}, ValueError, "targets.*same path"),
        ({"targets": ["a.ckpt"]}, TypeError, "targets"),
        ({"files": {}}, ValueError, "files"),
        ({"files": {"sub/x.pt": 1}}, ValueError, "files"),
        ({"files": {MANIFEST_NAME: 1}}, ValueError, "files"),
        ({"files": [1]}, TypeError, "files"),
        ({"step": -1}, ValueError, "step"),
        ({"epoch": 1.5}, TypeError, "epoch"),
        ({"world_size": 0}, ValueError, "world_size"),
        ({"kind": "bogus"}, ValueError, "kind"),
        ({"metrics": {"loss": "low"}}, TypeError, "metrics"),
        ({"metrics": None}, TypeError, "metrics"),
        ({"metrics": {"loss": "0.5"}}, TypeError, "metrics"),
    ],
)
def test_bad_arguments_name_the_parameter(tmp_path, monkeypatch, kwargs, error, match):
    monkeypatch.chdir(tmp_path)
    arguments = {"targets": [("a.ckpt", "r")], "files": {"x.pt": 1}, "step": 0, "epoch": 0, "metrics": {}}
    arguments["world_size"] = 1
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        write_checkpoint(arguments.pop("targets"), arguments.pop("files"), **arguments)
    assert os.listdir(tmp_path) == []


def test_an_undeletable_replaced_copy_warns_and_is_left_for_recovery(tmp_path, save, monkeypatch):
    save(tmp_path / "last.ckpt", step=1)

    def stuck(path, *args, **kwargs):
        raise OSError(errno.EBUSY, "Device or resource busy")

    with monkeypatch.context() as patch:
        patch.setattr("shutil.rmtree", stuck)
        with pytest.warns(UserWarning, match=r"committed .*last\.ckpt but could not delete the replaced .*\.old-"):
            save(tmp_path / "last.ckpt", step=2)
    assert read_manifest(tmp_path / "last.ckpt").step == 2 and len(os.listdir(tmp_path)) == 2
    recover_directory(tmp_path)
    assert os.listdir(tmp_path) == ["last.ckpt"]
