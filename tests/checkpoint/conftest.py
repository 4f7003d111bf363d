"""Helpers shared by the checkpoint storage tests."""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from resilient.checkpoint import (
    MANIFEST_NAME,
    Manifest,
    read_manifest,
    write_checkpoint,
)
from resilient.checkpoint._manifest import encode_manifest


@pytest.fixture
def save() -> Callable[..., Manifest]:
    """Write a one-target checkpoint with small defaults; returns its manifest."""

    def _save(
        path: Path, step: int = 1, *, rule: str = "test", files: dict[str, Any] | None = None, **kw: Any
    ) -> Manifest:
        kw = {"epoch": 0, "metrics": {}, "world_size": 1, **kw}
        payload = files if files is not None else {"state.pt": {"w": torch.arange(1000.0)}}
        return write_checkpoint([(path, rule)], payload, step=step, **kw)[0]

    return _save


@pytest.fixture
def rewrite_manifest() -> Callable[..., None]:
    """Replace manifest fields with a VALID self-checksum, as a different writer would have."""

    def _rewrite(path: Path, **changes: Any) -> None:
        manifest = dataclasses.replace(read_manifest(path), **changes)
        (path / MANIFEST_NAME).write_bytes(encode_manifest(manifest))

    return _rewrite


@pytest.fixture
def flip_byte() -> Callable[[Path, int], None]:
    """Corrupt one byte in place, keeping the size: what a bad disk or cable does."""

    def _flip(file: Path, offset: int) -> None:
        data = bytearray(file.read_bytes())
        data[offset] ^= 0x01
        file.write_bytes(bytes(data))

    return _flip


@pytest.fixture
def no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a filesystem without hard links, or with targets on two filesystems."""

    def refuse(source: object, destination: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
