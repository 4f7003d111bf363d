"""A checkpoint directory is untrusted input: forged manifests and odd files are refused, never followed.

Each refusal must name the file and why, and come without reading anything outside the
checkpoint, without blocking (a FIFO, /dev/zero) and without reading past the promised size.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import xxhash

from resilient.checkpoint import (
    MANIFEST_NAME,
    SHARDS_METADATA,
    CheckpointError,
    FileEntry,
    _manifest,
    load_files,
    read_manifest,
    verify,
    write_checkpoint,
)


def _entry(data: bytes) -> FileEntry:
    return FileEntry(len(data), xxhash.xxh3_128_hexdigest(data))


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/dev/zero", "is an absolute path"),
        ("../../secret.txt", "is a path, not a plain file name"),
        ("sub/state.pt", "is a path, not a plain file name"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        (".metadata.tmp", "starts with '.'"),  # only DCP's own ".metadata" may
        ("", "is empty"),
        ("state\0.pt", "contains a NUL byte"),
        (MANIFEST_NAME, "is the manifest itself"),
    ],
)
def test_a_manifest_listing_anything_but_a_plain_name_is_refused(tmp_path, save, rewrite_manifest, name, why):
    save(tmp_path / "a.ckpt")
    rewrite_manifest(tmp_path / "a.ckpt", files={name: _entry(b"")})
    expected = f"checkpoint {tmp_path / 'a.ckpt'}: {MANIFEST_NAME} lists {name!r}, which {why}"
    for check in (read_manifest, verify):
        with pytest.raises(CheckpointError, match=re.escape(expected)):
            check(tmp_path / "a.ckpt")


def test_a_manifest_cannot_vouch_for_a_file_outside_its_checkpoint(tmp_path, save, rewrite_manifest):
    (tmp_path / "secret.txt").write_bytes(b"hunter2")
    checkpoint = tmp_path / "runs" / "a.ckpt"
    save(checkpoint)
    rewrite_manifest(checkpoint, files={"../../secret.txt": _entry(b"hunter2")})
    assert (checkpoint / "../../secret.txt").read_bytes() == b"hunter2"  # the forgery is otherwise sound
    with pytest.raises(CheckpointError, match=r"lists '\.\./\.\./secret\.txt'"):
        verify(checkpoint, full=True)
    with pytest.raises(CheckpointError, match=r"lists '\.\./\.\./secret\.txt'"):
        load_files(checkpoint, ["../../secret.txt"])


def test_a_negative_size_in_the_manifest_is_refused(tmp_path, save, rewrite_manifest):
    save(tmp_path / "a.ckpt")
    rewrite_manifest(tmp_path / "a.ckpt", files={"state.pt": FileEntry(-1, "0" * 32)})
    with pytest.raises(CheckpointError, match=r"lists 'state\.pt', which has a negative size"):
        read_manifest(tmp_path / "a.ckpt")


def _outside_link(payload: Path) -> None:
    payload.rename(payload.parent.parent / "elsewhere.pt")
    payload.symlink_to(payload.parent.parent / "elsewhere.pt")


def _replaced(make):
    def replace(payload: Path) -> None:
        payload.unlink()
        make(payload)

    return replace


@pytest.mark.parametrize(
    ("make", "kind"),
    [(_outside_link, "a symbolic link"), (_replaced(os.mkfifo), "a FIFO"), (_replaced(Path.mkdir), "a directory")],
    ids=["symlink", "fifo", "directory"],
)
def test_a_payload_that_is_not_a_regular_file_is_refused_by_every_check(tmp_path, save, make, kind):
    save(tmp_path / "a.ckpt")
    make(tmp_path / "a.ckpt" / "state.pt")
    expected = re.escape(f"checkpoint {tmp_path / 'a.ckpt'}: payload file state.pt is {kind}, not a regular file")
    with pytest.raises(CheckpointError, match=expected):
        verify(tmp_path / "a.ckpt")
    with pytest.raises(CheckpointError, match=expected):
        verify(tmp_path / "a.ckpt", full=True)
    with pytest.raises(CheckpointError, match=expected):
        load_files(tmp_path / "a.ckpt", ["state.pt"])


def test_reads_stop_one_byte_past_the_size_the_file_reported(tmp_path, save, monkeypatch):
    """A file larger than its reported size (procfs does that; so does a file that grows) is invalid."""
    save(tmp_path / "a.ckpt")
    payload = tmp_path / "a.ckpt" / "state.pt"
    size, inode = payload.stat().st_size, payload.stat().st_ino
    with open(payload, "ab") as f:
        f.write(b"appended after the manifest was written")
    real_fstat = os.fstat

    def fstat_reporting_the_manifest_size(fd: int) -> os.stat_result:
        result = real_fstat(fd)
        if result.st_ino != inode:
            return result
        fields = list(result[:10])
        fields[6] = size
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", fstat_reporting_the_manifest_size)
    expected = re.escape(f"payload file state.pt changed size while it was read (expected {size} bytes)")
    with pytest.raises(CheckpointError, match=expected):
        verify(tmp_path / "a.ckpt", full=True)
    with pytest.raises(CheckpointError, match=expected):
        load_files(tmp_path / "a.ckpt", ["state.pt"])


def test_an_oversized_manifest_is_refused_without_being_read(tmp_path, save):
    save(tmp_path / "a.ckpt")
    manifest = tmp_path / "a.ckpt" / MANIFEST_NAME
    os.truncate(manifest, 64 * 1024 * 1024)  # sparse: no disk used
    limit = _manifest.MAX_MANIFEST_BYTES
    with pytest.raises(CheckpointError, match=f"{MANIFEST_NAME} has {64 * 1024 * 1024} bytes, more than the {limit}"):
        read_manifest(tmp_path / "a.ckpt")


def test_the_writer_refuses_a_manifest_no_reader_would_accept(tmp_path, monkeypatch):
    monkeypatch.setattr(_manifest, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(ValueError, match=r"MANIFEST\.json would have \d+ bytes, more than the 100"):
        write_checkpoint([(tmp_path / "a.ckpt", "r")], {"state.pt": 1}, step=0, epoch=0, metrics={}, world_size=1)
    assert os.listdir(tmp_path) == []


def test_dcp_metadata_is_the_one_payload_name_that_may_start_with_a_dot(tmp_path, save, rewrite_manifest):
    """A sharded checkpoint lists torch.distributed.checkpoint's `.metadata` like any payload file."""
    save(tmp_path / "a.ckpt")
    (tmp_path / "a.ckpt" / SHARDS_METADATA).write_bytes(b"dcp")
    rewrite_manifest(tmp_path / "a.ckpt", files={SHARDS_METADATA: _entry(b"dcp")})
    assert set(verify(tmp_path / "a.ckpt", full=True).files) == {SHARDS_METADATA}
    (tmp_path / "a.ckpt" / SHARDS_METADATA).write_bytes(b"dcq")
    with pytest.raises(CheckpointError, match="is corrupt"):
        verify(tmp_path / "a.ckpt", full=True)
