"""seal_checkpoint: a directory another program wrote becomes a checkpoint only through its
manifest, committed last; files changed afterwards, or a seal cut short, leave it invalid."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient.checkpoint import MANIFEST_NAME, CheckpointError, find_checkpoints, seal_checkpoint, verify


def _written(directory: Path) -> Path:
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"weights" * 100)
    (directory / "rng_state_1.pth").write_bytes(b"rng")
    return directory


def test_a_sealed_directory_verifies_every_byte_and_changes_after_it_do_not(tmp_path: Path) -> None:
    path = _written(tmp_path / "checkpoint-5")
    with pytest.raises(CheckpointError, match="never completely written"):
        verify(path)
    manifest = seal_checkpoint(path, step=5, epoch=0, world_size=2, rule="huggingface")
    assert sorted(manifest.files) == ["model.safetensors", "rng_state_1.pth"]
    assert verify(path, full=True).step == 5
    (path / "rng_state_1.pth").write_bytes(b"RNG")  # same size, other bytes: a write in place
    with pytest.raises(CheckpointError, match="rng_state_1.pth is corrupt"):
        verify(path, full=True)
    seal_checkpoint(path, step=5, epoch=0, world_size=2, rule="huggingface")  # sealed again: replaced
    assert verify(path, full=True).files["rng_state_1.pth"].size == 3


def test_a_seal_cut_short_is_tidied_and_a_subdirectory_is_refused(tmp_path: Path) -> None:
    path = _written(tmp_path / "checkpoint-5")
    (path / f".{MANIFEST_NAME}.tmp-0123ab").write_bytes(b"{")  # the seal of a killed process
    seal_checkpoint(path, step=5, epoch=0, world_size=1, rule="huggingface")
    assert not (path / f".{MANIFEST_NAME}.tmp-0123ab").exists()
    (path / "shards").mkdir()
    with pytest.raises(CheckpointError, match="shards is not a regular file"):
        seal_checkpoint(path, step=5, epoch=0, world_size=1, rule="huggingface")


def test_commit_as_renames_the_sealed_temporary_into_place(tmp_path: Path) -> None:
    temp = _written(tmp_path / ".step=3.ckpt.tmp-00aa")
    final = tmp_path / "step=3.ckpt"
    seal_checkpoint(temp, step=3, epoch=0, world_size=1, rule="accelerate", commit_as=final)
    assert not temp.exists()
    assert [(path.name, manifest.step) for path, manifest in find_checkpoints([tmp_path])] == [("step=3.ckpt", 3)]
