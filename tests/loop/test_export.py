"""Consolidation: a sharded (FSDP2) checkpoint read whole on one process, and `resilient export`.

One real 2-rank FSDP2 run of tests/loop/scripts/train.py (`--fsdp`, shared with test_sharded.py
through the session's `reference_weights`) writes the checkpoints; this process, with no process
group, reads them. The references are the run's own final weights, gathered by FSDP on rank 0,
and DCP's own public consolidation (`dcp_to_torch_save`) of the same checkpoint. DCP's index of
the shards is a pickle: a forged one is refused under weights_only, here and on resume.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import xxhash
from torch import nn

import resilient
from resilient.checkpoint import (
    MANIFEST_NAME,
    SHARDS_METADATA,
    CheckpointError,
    FileEntry,
    UntrustedCheckpointError,
    read_manifest,
)
from resilient.checkpoint._manifest import encode_manifest

from ._jobs import FSDP, SCRIPT, launch, rank_envs


@pytest.fixture(scope="module")
def trained(reference_weights: Callable[..., Path]) -> tuple[Path, Path]:
    """(the run directory of an uninterrupted 2-rank FSDP2 run, its final weights); read only."""
    weights = reference_weights(2, FSDP)
    return weights.parent / "run", weights


def _checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "step=12.ckpt"  # the last step's: its model is the final weights


def _block() -> nn.Module:
    """The training script's model, unsharded."""
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Block()


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def _export(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilient", "export", *map(str, args)], env=rank_envs(1)[0],
                          capture_output=True, text=True, timeout=240)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_load_checkpoint_reads_the_shards_whole_on_one_process(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    run_dir, weights = trained
    checkpoint = _checkpoint(run_dir)
    state = resilient.load_checkpoint(checkpoint)
    assert not torch.distributed.is_initialized()
    assert state["resilient"]["sharded"] == ["model", "optimizer"]
    assert {"model", "optimizer", "schedule", "sampler"} <= state.keys()
    _assert_same(state["model"], torch.load(weights))  # the weights FSDP gathered at the run's end
    with warnings.catch_warnings():  # DCP's own one-process converter warns that there is no process group
        warnings.simplefilter("ignore")
        dcp_to_torch_save(checkpoint, tmp_path / "dcp.pt")
    _assert_same({name: state[name] for name in ("model", "optimizer")}, torch.load(tmp_path / "dcp.pt"))
    assert state["optimizer"]["param_groups"][0]["params"][0] == "embed.weight"  # keyed by parameter names

    model = _block()
    model.load_state_dict(state["model"])  # strict: every key, whole shapes
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    _assert_same(get_optimizer_state_dict(model, optimizer), state["optimizer"])
    assert resilient.load_checkpoint(checkpoint, only=["model"]).keys() == {"model", "resilient"}


def test_a_flipped_byte_in_one_shard_is_named_and_nothing_is_exported(trained: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    checkpoint = shutil.copytree(_checkpoint(trained[0]), tmp_path / "damaged.ckpt")
    shard = next(checkpoint.glob("__1_*.distcp"))
    _flip_a_byte(shard)
    with pytest.raises(CheckpointError, match=f"payload file {shard.name} is corrupt"):
        resilient.load_checkpoint(checkpoint)
    result = _export(checkpoint, tmp_path / "out.pt")
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"resilient: error: checkpoint {checkpoint}: payload file {shard.name} is corrupt " \
                            "(its checksum does not match)\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["damaged.ckpt"]  # no OUT, no temporary


class _Payload:
    """What a forger pickles: harmless here, but it runs when unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return print, ("the forged pickle ran",)


def _forge_shards_index(checkpoint: Path) -> None:
    """Replace DCP's index of the shards with `_Payload`, and rewrite the manifest to match: a
    forger who can write the checkpoint can do that, so every checksum passes."""
    forged = pickle.dumps(_Payload())
    (checkpoint / SHARDS_METADATA).write_bytes(forged)
    manifest = read_manifest(checkpoint)
    files = dict(manifest.files, **{SHARDS_METADATA: FileEntry(len(forged), xxhash.xxh3_128_hexdigest(forged))})
    (checkpoint / MANIFEST_NAME).write_bytes(encode_manifest(dataclasses.replace(manifest, files=files)))


def test_forged_dcp_metadata_is_refused_before_anything_of_it_runs(trained: tuple[Path, Path], tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    checkpoint = shutil.copytree(_checkpoint(trained[0]), tmp_path / "forged.ckpt")
    _forge_shards_index(checkpoint)
    with pytest.raises(UntrustedCheckpointError, match=r"refers to builtins\.print.*weights_only=False"):
        resilient.load_checkpoint(checkpoint)
    assert "the forged pickle ran" not in capfd.readouterr().out


def test_a_resume_refuses_forged_dcp_metadata_too(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """The same forgery in every checkpoint of a run, resumed on one rank with the default
    weights_only: the run ends naming it, and nothing of the pickle ran."""
    run_dir = shutil.copytree(trained[0], tmp_path / "run")
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):
        _forge_shards_index(checkpoint)
    [proc] = launch(run_dir, tmp_path / "out.pt", 1, None, FSDP)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr
    assert "UntrustedCheckpointError" in stderr and "refers to builtins.print" in stderr, stderr[-2000:]
    assert "the forged pickle ran" not in stdout


def test_export_writes_one_plain_file_of_the_newest_checkpoint(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, weights = trained
    out = tmp_path / "model.pt"
    result = _export(run_dir, out, "--only", "model")  # a run directory: its newest valid checkpoint
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("exported step 12 of ") and "(model) to" in result.stdout
    exported = torch.load(out, weights_only=True)
    assert exported.keys() == {"model", "resilient"}
    assert exported["resilient"]["step"] == 12 and exported["resilient"]["sharded"] == ["model", "optimizer"]
    model = _block()
    model.load_state_dict(exported["model"])
    _assert_same(model.state_dict(), torch.load(weights))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]  # no temporary left beside it

    before = out.read_bytes()
    refused = _export(_checkpoint(run_dir), out)
    assert refused.returncode == 2
    assert refused.stderr == f"resilient: error: {out} exists; add --force to replace it\n"
    assert out.read_bytes() == before and sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]
    replaced = _export(_checkpoint(run_dir), out, "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert torch.load(out, weights_only=True).keys() == {"model", "optimizer", "schedule", "sampler", "resilient"}


def test_export_of_a_checkpoint_that_is_not_sharded(tmp_path: Path) -> None:
    with resilient.Run(checkpoint=[], run_dir=tmp_path / "run") as run:
        model = nn.Linear(3, 2)
        run.track(model=model, optimizer=torch.optim.Adam(model.parameters()))
        run.save_checkpoint(tmp_path / "manual.ckpt")
    assert resilient.load_checkpoint(tmp_path / "manual.ckpt")["resilient"]["sharded"] == []
    result = _export(tmp_path / "manual.ckpt", tmp_path / "out.pt")
    assert result.returncode == 0, result.stderr
    exported = torch.load(tmp_path / "out.pt", weights_only=True)
    _assert_same(exported["model"], model.state_dict())
    assert exported["resilient"]["kind"] == "full" and "optimizer" in exported


def _point_metadata_outside_the_manifest(checkpoint: Path) -> str:
    """Rewrite DCP's real metadata so that one shard's data is read from a file the manifest does
    not list (a copy beside it), and the manifest to match: every checksum passes."""
    metadata = pickle.loads((checkpoint / SHARDS_METADATA).read_bytes())
    index, info = next(iter(metadata.storage_data.items()))
    shutil.copyfile(checkpoint / info.relative_path, checkpoint / "stray.distcp")
    metadata.storage_data[index] = dataclasses.replace(info, relative_path="stray.distcp")
    forged = pickle.dumps(metadata)
    (checkpoint / SHARDS_METADATA).write_bytes(forged)
    manifest = read_manifest(checkpoint)
    files = dict(manifest.files, **{SHARDS_METADATA: FileEntry(len(forged), xxhash.xxh3_128_hexdigest(forged))})
    (checkpoint / MANIFEST_NAME).write_bytes(encode_manifest(dataclasses.replace(manifest, files=files)))
    return "DCP's metadata names stray.distcp, which its manifest does not list"


def test_dcp_metadata_pointing_at_a_file_the_manifest_does_not_list_is_refused(
        trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Only files the manifest lists (and so checked) are read: by `load_checkpoint` and by a resume,
    which skips such a checkpoint as it skips a damaged one (here every one: it starts afresh)."""
    checkpoint = shutil.copytree(_checkpoint(trained[0]), tmp_path / "stray.ckpt")
    message = _point_metadata_outside_the_manifest(checkpoint)
    with pytest.raises(CheckpointError, match=message):
        resilient.load_checkpoint(checkpoint)
    run_dir = shutil.copytree(trained[0], tmp_path / "run")
    forged = sorted(each for each in (run_dir / "checkpoints").glob("*.ckpt") if not each.is_symlink())
    for each in forged:
        _point_metadata_outside_the_manifest(each)
    [proc] = launch(run_dir, tmp_path / "out.pt", 1, None, FSDP)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    for each in forged:
        assert f"skipping checkpoint {each}: checkpoint {each}: {message}" in stderr
    assert "does not fit the tracked" not in stderr  # a forgery, not another model
    assert json.loads(stdout)["resumed_from"] is None
