"""The reader of sharded checkpoints (`resilient.checkpoint.read_whole_shards`, and `read_shards`
on every rank of a run): DCP's format read by our own storage reader, which copies each stored
tensor straight into the tensor that receives it and hashes the files it is asked to verify as it
reads them. Real `torch.distributed.checkpoint` files, written in this process by `write_shards`
(a world of one, without a process group).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from resilient.checkpoint import CorruptCheckpointError, read_whole_shards, shard_writer, write_shards


def _state() -> dict[str, dict[str, object]]:
    """What a model and an optimizer hold, in the layouts the reader copies differently: contiguous
    tensors (straight into place), a transposed one, another dtype, a scalar, and plain values."""
    torch.manual_seed(0)
    return {
        "model": {"weight": torch.randn(64, 48), "transposed": torch.randn(16, 24).t(),
                  "half": torch.randn(8, 8).to(torch.bfloat16), "index": torch.arange(10)},
        "optimizer": {"state": {"weight": {"step": torch.tensor(3.0), "exp_avg": torch.randn(64, 48)}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": ["weight"]}]},
    }


@pytest.fixture()
def shards(tmp_path: Path) -> tuple[Path, dict]:
    """A sharded checkpoint's directory and the entries (size, checksum) of its files."""
    directory = tmp_path / "sharded"
    directory.mkdir()
    with warnings.catch_warnings():  # DCP's note that a world of one has no process group: what `alone` means
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        entries, _ = write_shards(_state(), directory, rank=0, alone=True)
    return directory, entries


def _shard_files(entries: dict) -> dict:
    return {name: entry for name, entry in entries.items() if shard_writer(name) is not None}


def test_every_value_reads_back_exactly_as_written_verified_or_not(shards: tuple[Path, dict]) -> None:
    directory, entries = shards
    for verify in (None, _shard_files(entries)):
        whole = read_whole_shards(directory, entries, ["model", "optimizer"], weights_only=True, verify=verify)
        expected = _state()
        for name, tensor in expected["model"].items():
            assert whole["model"][name].dtype == tensor.dtype and torch.equal(whole["model"][name], tensor), name
        saved_state = expected["optimizer"]["state"]["weight"]
        for name, tensor in saved_state.items():
            assert torch.equal(whole["optimizer"]["state"]["weight"][name], tensor), name
        assert whole["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]


@pytest.mark.parametrize("where", ["first", "third", "middle", "last"])
@pytest.mark.parametrize("wanted", [["model", "optimizer"], ["optimizer"]])
def test_a_flipped_byte_anywhere_in_a_verified_file_is_named_even_where_nothing_is_loaded_from(
        shards: tuple[Path, dict], tmp_path: Path, where: str, wanted: list[str]) -> None:
    """Every byte is hashed, not only those copied into a tensor: zip headers and pickles, and (with
    the optimizer alone wanted) the model's records, which no tensor receives."""
    directory, entries = shards
    damaged = tmp_path / "damaged"
    shutil.copytree(directory, damaged)
    [name] = _shard_files(entries)
    data = bytearray((damaged / name).read_bytes())
    data[{"first": 0, "third": len(data) // 3, "middle": len(data) // 2, "last": len(data) - 1}[where]] ^= 0x04
    (damaged / name).write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=f"payload file {name} is corrupt"):
        read_whole_shards(damaged, entries, wanted, weights_only=True, verify=_shard_files(entries))


def test_a_verified_file_of_another_size_than_listed_is_damage_not_a_misfit(shards: tuple[Path, dict],
                                                                            tmp_path: Path) -> None:
    """A shard file cut short (or grown) since its size was checked is damage, which a resume answers
    by falling back, not a checkpoint that does not fit the model, which stops the run."""
    directory, entries = shards
    damaged = tmp_path / "damaged"
    shutil.copytree(directory, damaged)
    [name] = _shard_files(entries)
    (damaged / name).write_bytes((damaged / name).read_bytes()[:-1])
    with pytest.raises(CorruptCheckpointError, match=f"payload file {name} has"):
        read_whole_shards(damaged, entries, ["model"], weights_only=True, verify=_shard_files(entries))
