"""Fixtures more than one test folder needs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`mount_tmpfs("2m")`: a tmpfs of that size of the test's own, a disk that really fills up.

    Mounting needs root; without it (or where mount is refused) the test is skipped, saying so.
    """
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs to fill up needs root")
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "--lazy", str(point)], check=True)


@pytest.fixture
def small_filesystem(mount_tmpfs: Callable[[str], Path]) -> Path:
    """A 2 MiB tmpfs."""
    return mount_tmpfs("2m")
