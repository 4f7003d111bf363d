"""Checking file modes: what a user other than the owner could write, under a umask set for a test."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """This process's umask set to `mask` for the block, and restored after it."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


GROUP_OR_OTHERS = stat.S_IWGRP | stat.S_IWOTH
OTHERS = stat.S_IWOTH


def writable(root: Path, by: int = GROUP_OR_OTHERS) -> list[str]:
    """Every path under `root` (itself included) that users other than its owner could write.

    `by=OTHERS` asks only about everyone else: a job's own files follow the umask it was given,
    made no looser than `umask 002`, so its group may write them where the user wants that.
    """
    paths = [root, *root.rglob("*")]
    return [f"{path} {stat.filemode(path.lstat().st_mode)}" for path in paths
            if not path.is_symlink() and mode(path) & by]
