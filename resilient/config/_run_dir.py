"""Checking, before submitting, that the run directory can be created, without creating it.

A job that cannot write its run directory fails only when it starts, possibly after hours in
the queue. Permission bits are no answer (as root `os.access` says yes on a read-only mount,
and ACLs or quotas are invisible to it), so the check writes and removes one temporary file in
the nearest directory that exists. Nothing else is created: a failed load leaves no trace.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..submission._options import _SAFE_VALUE
from ._errors import Invalid
from ._values import SAFE_CHARACTERS

_RUN_DIR = ("run_dir",)


def check_run_dir(run_dir: Path) -> None:
    """Refuse an absolute `run_dir` that the batch script cannot name or the job cannot create."""
    if not _SAFE_VALUE.fullmatch(str(run_dir)):
        raise Invalid(_RUN_DIR, (
            f"{str(run_dir)!r} is refused: only {SAFE_CHARACTERS} may appear in a path "
            "written into the batch script (the current directory counts for a relative run_dir)"))
    existing = run_dir
    while not existing.exists():
        if existing.is_symlink():
            raise Invalid(_RUN_DIR, f"{str(existing)!r} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == run_dir else f"cannot be created: {str(existing)!r} is a file"
        raise Invalid(_RUN_DIR, f"{str(run_dir)!r} {what}, not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".resilient-write-test-"):
            pass
    except OSError as error:
        raise Invalid(_RUN_DIR, f"cannot write in {str(existing)!r}: {error.strerror or error}") from None
