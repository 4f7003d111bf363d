from __future__ import annotations

import zipfile

import pytest
import torch

from resilient.checkpoint import CheckpointError, load_files, verify


class Opaque:
    """An arbitrary user class: unpicklable under weights_only."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_truncation_is_caught_by_fast_verification(tmp_path, save):
    save(tmp_path / "a.ckpt")
    payload = tmp_path / "a.ckpt" / "state.pt"
    size = payload.stat().st_size
    payload.write_bytes(payload.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=f"state.pt has {size - 10} bytes, the manifest says {size}"):
        verify(tmp_path / "a.ckpt")


def test_a_missing_payload_is_caught_by_fast_verification(tmp_path, save):
    save(tmp_path / "a.ckpt")
    (tmp_path / "a.ckpt" / "state.pt").unlink()
    with pytest.raises(CheckpointError, match=r"state\.pt is missing"):
        verify(tmp_path / "a.ckpt")


def test_a_flipped_payload_byte_is_caught_only_by_full_verification_and_loading(tmp_path, save, flip_byte):
    save(tmp_path / "a.ckpt")
    payload = tmp_path / "a.ckpt" / "state.pt"
    flip_byte(payload, payload.stat().st_size // 2)
    assert verify(tmp_path / "a.ckpt").step == 1
    with pytest.raises(CheckpointError, match=r"a\.ckpt: payload file state\.pt is corrupt"):
        verify(tmp_path / "a.ckpt", full=True)
    with pytest.raises(CheckpointError, match=r"a\.ckpt: payload file state\.pt is corrupt"):
        load_files(tmp_path / "a.ckpt", ["state.pt"])


def test_weights_only_refuses_arbitrary_objects_and_opt_in_loads_them(tmp_path, save):
    save(tmp_path / "a.ckpt", files={"state.pt": {"user": Opaque(3), "w": torch.ones(2)}})
    with pytest.raises(CheckpointError, match=r"holds non-tensor objects.*Opaque.*requires weights_only=False.*trust"):
        load_files(tmp_path / "a.ckpt", ["state.pt"])
    loaded = load_files(tmp_path / "a.ckpt", ["state.pt"], weights_only=False)["state.pt"]
    assert isinstance(loaded["user"], Opaque) and loaded["user"].value == 3


def test_load_files_reads_only_the_named_files_onto_map_location(tmp_path, save):
    save(tmp_path / "a.ckpt", files={"state.pt": {"w": torch.ones(2)}, "rank-00001.pt": {"r": torch.zeros(1)}})
    (tmp_path / "a.ckpt" / "rank-00001.pt").write_bytes(b"damaged, but not asked for")
    loaded = load_files(tmp_path / "a.ckpt", ["state.pt"], map_location="meta")
    assert list(loaded) == ["state.pt"] and loaded["state.pt"]["w"].is_meta


def test_load_files_names_an_unknown_file_and_refuses_a_bare_string(tmp_path, save):
    save(tmp_path / "a.ckpt")
    with pytest.raises(CheckpointError, match=r"no payload file rank-00003\.pt \(it has: state\.pt\)"):
        load_files(tmp_path / "a.ckpt", ["rank-00003.pt"])
    with pytest.raises(TypeError, match="names"):
        load_files(tmp_path / "a.ckpt", "state.pt")


def test_also_check_finds_a_damaged_file_that_was_not_loaded(tmp_path, save, flip_byte):
    files = {"state.pt": {"w": torch.arange(10.0)}, "rank-00001.pt": {"rng": torch.arange(5)}}
    save(tmp_path / "a.ckpt", files=files)
    flip_byte(tmp_path / "a.ckpt" / "rank-00001.pt", 200)
    assert torch.equal(load_files(tmp_path / "a.ckpt", ["state.pt"])["state.pt"]["w"], torch.arange(10.0))
    with pytest.raises(CheckpointError, match="payload file rank-00001.pt is corrupt"):
        load_files(tmp_path / "a.ckpt", ["state.pt"], also_check=["rank-00001.pt"])
    with pytest.raises(CheckpointError, match="has no payload file rank-00002.pt"):
        load_files(tmp_path / "a.ckpt", ["state.pt"], also_check=["rank-00002.pt"])


def test_a_loaded_tensor_is_mapped_privately_writing_it_never_changes_the_checkpoint(tmp_path, save):
    save(tmp_path / "a.ckpt", files={"state.pt": {"w": torch.zeros(100_000)}})
    loaded = load_files(tmp_path / "a.ckpt", ["state.pt"])["state.pt"]["w"]
    loaded.add_(1.0)
    assert torch.equal(loaded, torch.ones(100_000))
    verify(tmp_path / "a.ckpt", full=True)
    assert torch.equal(load_files(tmp_path / "a.ckpt", ["state.pt"])["state.pt"]["w"], torch.zeros(100_000))


def test_payloads_skip_torchs_crc32_and_the_setting_is_left_as_it_was(tmp_path, save):
    """Our checksum covers every byte; torch's per-record crc32 would only cost time."""
    assert hasattr(torch.serialization, "set_crc32_options"), "the pinned torch (2.13) can switch crc32 off"
    for setting in (True, False):
        torch.serialization.set_crc32_options(setting)
        try:
            save(tmp_path / f"{setting}.ckpt")
            assert torch.serialization.get_crc32_options() is setting
        finally:
            torch.serialization.set_crc32_options(True)
        with zipfile.ZipFile(tmp_path / f"{setting}.ckpt" / "state.pt") as payload:
            assert {record.CRC for record in payload.infolist()} == {0}
