"""Replacing a run directory's small files in one durable step: the one writer of job.json,
status.json and config.yaml.

`status.json` decides whether a job requeues and `job.json` which job owns the run, so a crash
or a full disk while writing one must leave the previous version whole, and a written version
must survive a power cut. Each write goes to a temporary dot-name in the same directory, is
fsynced, renamed over the old file (atomic on POSIX), and the directory is fsynced so that the
rename lasts. On any failure the temporary file goes and the old file stays as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._modes import FILE_MODE


def fsync_dir(directory: Path) -> None:
    """Make renames and new entries in `directory` durable, not just visible."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, text: str, mode: int = FILE_MODE) -> None:
    """Replace `path` with `text` in one durable step: readers see the old file or the new one, never half."""
    data = text.encode()
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.unlink(missing_ok=True)  # a leftover of a killed writer would keep its own mode
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, value: Any, *, sort_keys: bool = False) -> None:
    """Replace `path` with `value` as indented JSON, durably (a value JSON cannot hold writes nothing)."""
    write_atomically(path, json.dumps(value, indent=1, sort_keys=sort_keys) + "\n")
