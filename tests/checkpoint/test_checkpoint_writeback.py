"""Early writeback: a payload's disk writes start chunk by chunk while it is serialized, and a
file system that refuses the hint changes nothing but the speed."""

from __future__ import annotations

import io
import os
import threading

import pytest
import torch
import xxhash

from resilient.checkpoint import _writeback, read_manifest, write_checkpoint
from resilient.checkpoint._hashing import HashingWriter
from resilient.checkpoint._writeback import WritebackFile, start_writeback

CHUNK = _writeback.CHUNK


@pytest.fixture
def writebacks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool]]:
    """Each (offset, length, accepted) the writer asked of the real `start_writeback`."""
    asked: list[tuple[int, int, bool]] = []

    def recording(fd: int, offset: int, length: int) -> bool:
        accepted = start_writeback(fd, offset, length)
        asked.append((offset, length, accepted))
        return accepted

    monkeypatch.setattr(_writeback, "start_writeback", recording)
    return asked


def test_a_large_payload_is_written_back_in_order_as_it_is_written(tmp_path, writebacks):
    weights = torch.randn(5 * CHUNK // 4 + 123)  # one record over five chunks, with a ragged end
    manifest = write_checkpoint([(tmp_path / "x.ckpt", "test")], {"state.pt": {"w": weights}}, step=1, epoch=0,
                                metrics={}, world_size=1)[0]

    size = manifest.files["state.pt"].size
    assert len(writebacks) >= 5
    _assert_written_back_in_order(writebacks, size)
    data = (tmp_path / "x.ckpt" / "state.pt").read_bytes()
    assert len(data) == size and xxhash.xxh3_128_hexdigest(data) == manifest.files["state.pt"].checksum
    assert read_manifest(tmp_path / "x.ckpt") == manifest
    assert torch.equal(torch.load(tmp_path / "x.ckpt" / "state.pt")["w"], weights)


def _assert_written_back_in_order(writebacks: list[tuple[int, int, bool]], size: int) -> None:
    """Each chunk's writeback was asked once, in order, as it was written, and the kernel took it."""
    assert all(accepted for _, _, accepted in writebacks), writebacks
    assert writebacks[0][0] == 0
    for (offset, length, _), (following, _, _) in zip(writebacks, writebacks[1:]):
        assert length >= CHUNK and offset + length == following  # contiguous, no byte asked twice
    last_offset, last_length, _ = writebacks[-1]
    assert 0 <= size - (last_offset + last_length) < CHUNK  # the tail is left to the fsync


def test_a_small_payload_asks_for_no_writeback(tmp_path, writebacks):
    write_checkpoint([(tmp_path / "x.ckpt", "test")], {"state.pt": {"w": torch.arange(1000.0)}}, step=1, epoch=0,
                     metrics={}, world_size=1)
    assert writebacks == []  # the fsync writes it in one go


def test_a_file_that_refuses_writeback_is_written_whole_and_not_asked_again(writebacks):
    """A pipe stands in for a file system without the hint: the kernel refuses it (ESPIPE)."""
    reading, writing = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(reading, 1 << 20):
            received.extend(chunk)

    drainer = threading.Thread(target=drain)
    drainer.start()
    data = os.urandom(3 * CHUNK + 5)
    with open(writing, "wb", buffering=0) as pipe:
        writer = HashingWriter(pipe)
        assert writer.write(data) == len(data)
        assert writer.write(data[:10]) == 10
    drainer.join()
    os.close(reading)

    assert writebacks == [(0, CHUNK, False)]  # refused once, then never asked again
    assert bytes(received) == data + data[:10] and writer.size == len(received)
    assert writer.hexdigest() == xxhash.xxh3_128_hexdigest(data + data[:10])


def test_start_writeback_says_whether_the_kernel_took_the_hint(tmp_path):
    with open(tmp_path / "file", "wb", buffering=0) as file:
        file.write(b"x" * 4096)
        assert start_writeback(file.fileno(), 0, 4096)
    reading, writing = os.pipe()
    try:
        assert not start_writeback(writing, 0, 1)
    finally:
        os.close(reading)
        os.close(writing)


def test_a_buffered_stream_over_a_writeback_file_writes_every_byte_and_writes_back_in_order(tmp_path, writebacks):
    """The stream DCP's shards are written through: small writes are buffered, a storage comes whole."""
    pieces = [os.urandom(30), os.urandom(2 * CHUNK + 7), os.urandom(16), os.urandom(CHUNK)]
    with io.BufferedWriter(WritebackFile(str(tmp_path / "shard"))) as stream:
        for piece in pieces:
            stream.write(piece)
        assert stream.tell() == sum(map(len, pieces))

    assert (tmp_path / "shard").read_bytes() == b"".join(pieces)
    assert len(writebacks) == 3
    _assert_written_back_in_order(writebacks, sum(map(len, pieces)))
