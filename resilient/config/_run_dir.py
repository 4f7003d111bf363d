"""Checking, before submitting, that the run directory is one a run may have, without creating it.

A job that cannot write its run directory fails only when it starts, possibly after hours in
the queue. Permission bits are no answer (as root `os.access` says yes on a read-only mount,
and ACLs or quotas are invisible to it), so the check writes and removes one temporary file in
the nearest directory that exists. Nothing else is created: a failed load leaves no trace.

A run directory is also written into, and moved aside by `--fresh`, so it must be a run's own:
not `/`, a system directory or the home directory (nor, for a rule, its `dirpath`), and if it
exists, holding nothing a run does not put there (`run_dir: data` next to `data/train.csv`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..rules import ModelCheckpoint
from ..rundir import RunDirError
from ..settings import SAFE_CHARACTERS, SAFE_VALUE
from ..submission import refuse_foreign_run_dir, refuse_foreign_sweep_dir
from ._errors import Invalid, KeyPath, shown

_RUN_DIR = ("run_dir",)
# The operating system's own directories: never a run's, nor anything inside them.
_SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
                 "/sbin", "/sys", "/usr")
# Directories shared by everything below them: a run may live inside, never be one of them.
_SHARED = ("/home", "/media", "/mnt", "/opt", "/root", "/run", "/srv", "/tmp", "/var", "/var/tmp")


def check_run_dir(run_dir: Path, checkpoint: ModelCheckpoint | Sequence[ModelCheckpoint] | None) -> None:
    """Refuse an absolute `run_dir` that the batch script cannot name, the job cannot create, or
    that is not a run's own; `checkpoint` says where its rules write inside it."""
    if not SAFE_VALUE.fullmatch(str(run_dir)):
        raise Invalid(_RUN_DIR, (
            f"{shown(str(run_dir))} is refused: only {SAFE_CHARACTERS} may appear in a path "
            "written into the batch script (the current directory counts for a relative run_dir)"))
    check_not_shared(run_dir, _RUN_DIR)
    try:
        existing = run_dir
        while not existing.exists():
            if existing.is_symlink():
                raise Invalid(_RUN_DIR, f"{str(existing)!r} is a broken symbolic link")
            existing = existing.parent
    except OSError as error:  # a name too long for the file system, say
        raise Invalid(_RUN_DIR, f"cannot use {shown(str(run_dir))}: {error.strerror or error}") from None
    if not existing.is_dir():
        what = "is a file" if existing == run_dir else f"cannot be created: {str(existing)!r} is a file"
        raise Invalid(_RUN_DIR, f"{str(run_dir)!r} {what}, not a directory")
    try:
        refuse_foreign_run_dir(run_dir, checkpoint)
    except RunDirError as error:
        raise Invalid(_RUN_DIR, str(error)) from None
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".resilient-write-test-"):
            pass
    except OSError as error:
        raise Invalid(_RUN_DIR, f"cannot write in {str(existing)!r}: {error.strerror or error}") from None


def check_not_shared(path: Path, key: KeyPath) -> None:
    """Refuse `/`, a system directory or anything in one, a shared directory such as /tmp, the
    home directory, and any directory above those: a run's files would mix with everyone's (and
    `--fresh` would move them all)."""
    resolved = Path(os.path.realpath(path))
    system = [Path(os.path.realpath(tree)) for tree in _SYSTEM_TREES]
    shared = [*system, *(Path(os.path.realpath(directory)) for directory in (*_SHARED, Path.home()))]
    if any(resolved.is_relative_to(tree) for tree in system) or any(
            resolved == directory or resolved in directory.parents for directory in shared):
        raise Invalid(key, (
            f"{str(path)!r} is refused: it is a system, shared or home directory; a run needs a "
            "directory of its own, such as runs/NAME"))


def check_sweep_dir(sweep_dir: Path) -> None:
    """Refuse a sweep's directory (`run_dir` of a file with a sweep) that is shared, a system
    directory, a file, or that holds a run or anything a sweep does not put there."""
    check_not_shared(sweep_dir, _RUN_DIR)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise Invalid(_RUN_DIR, f"{str(sweep_dir)!r} is a file, not a directory")
    try:
        refuse_foreign_sweep_dir(sweep_dir)
    except RunDirError as error:
        raise Invalid(_RUN_DIR, str(error)) from None
