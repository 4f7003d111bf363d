"""The writer of sharded checkpoints (`resilient.checkpoint.write_shards`): DCP's own file system
writer, whose fsync of each file is ours so that the file is hashed while the disk takes it.
Real `torch.distributed.checkpoint` files, written in this process (a world of one, without a
process group).
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from resilient.checkpoint import SHARDS_METADATA, write_shards
from resilient.checkpoint._hashing import checksum_bytes
from tests.rundir._modes import mode, umask


def _write(directory: Path) -> dict:
    directory.mkdir()
    state = {"model": {"weight": torch.randn(256, 64), "bias": torch.randn(64)}, "optimizer": {"lr": 0.1}}
    with warnings.catch_warnings():  # DCP's note that a world of one has no process group: what `alone` means
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        entries, needed = write_shards(state, directory, rank=0, alone=True)
    assert set(entries) == needed == set(os.listdir(directory))
    return entries


def test_each_file_is_fsynced_once_and_listed_with_the_checksum_of_its_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One fsync per file, as DCP's own ``sync_files`` does (ours, while the file is hashed), none
    twice; the manifest's entries vouch for exactly the bytes on disk."""
    synced: Counter[tuple[int, int]] = Counter()  # (device, inode) of each descriptor fsynced
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        status = os.fstat(descriptor)
        synced[status.st_dev, status.st_ino] += 1
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    directory = tmp_path / "sharded"
    entries = _write(directory)
    files = {name: os.stat(directory / name) for name in entries}
    assert synced == Counter({(status.st_dev, status.st_ino): 1 for status in files.values()})
    for name, entry in entries.items():
        data = (directory / name).read_bytes()
        assert (entry.size, entry.checksum) == (len(data), checksum_bytes(data)), name


@pytest.mark.parametrize("setting", [True, False])
def test_dcps_records_leave_out_torchs_crc32_and_the_setting_is_left_as_it_was(tmp_path: Path, setting: bool) -> None:
    """Our checksum covers every byte of the shards, as of our own files."""
    torch.serialization.set_crc32_options(setting)
    try:
        entries = _write(tmp_path / "sharded")
        assert torch.serialization.get_crc32_options() is setting
    finally:
        torch.serialization.set_crc32_options(True)
    metadata = pickle.loads((tmp_path / "sharded" / SHARDS_METADATA).read_bytes())
    records = 0
    for stored in metadata.storage_data.values():  # each value is a torch.save of its own at an offset
        assert stored.relative_path in entries
        data = (tmp_path / "sharded" / stored.relative_path).read_bytes()[stored.offset:stored.offset + stored.length]
        with zipfile.ZipFile(io.BytesIO(data)) as record:
            assert {member.CRC for member in record.infolist()} == {0}
        records += 1
    assert records == 3


def test_under_umask_000_no_shard_is_writable_by_others(tmp_path: Path) -> None:
    """DCP opens its files with the umask's mode; sealing narrows them, as our own files are."""
    with umask(0):
        entries = _write(tmp_path / "sharded")
    assert {name: mode(tmp_path / "sharded" / name) for name in entries} == dict.fromkeys(entries, 0o644)
