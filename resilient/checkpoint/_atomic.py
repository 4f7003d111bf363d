"""Crash-safe directory operations: commit, replace, remove and link checkpoints.

Every change to a checkpoint's name is a rename(2) inside one parent directory, which POSIX
makes atomic, followed by an fsync of that directory so the new name survives a power cut.
In-between states carry dot-names that `find_checkpoints` never lists and `recover_directory`
understands: ``.{name}.tmp-{hex}`` (being written), ``.{name}.old-{hex}`` (being replaced)
and ``.{name}.del-{hex}`` (being deleted). A directory cannot be renamed over a non-empty one,
so replacing moves the old checkpoint aside first; at every instant either the old or the new
checkpoint is complete under some name, and `recover_directory` can tell which.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import warnings
from pathlib import Path

from ..rundir import fsync_dir
from ._files import DIR_MODE
from ._manifest import CHECKPOINT_SUFFIX

# group "name": the final name; "state": what was happening to it when the process stopped.
LEFTOVER = re.compile(rf"^\.(?P<name>.+{re.escape(CHECKPOINT_SUFFIX)})\.(?P<state>tmp|old|del)-[0-9a-f]+$")


def sibling(final: Path, state: str) -> Path:
    """A fresh dot-name next to `final` that marks it as being in `state` (tmp, old or del)."""
    return final.with_name(f".{final.name}.{state}-{secrets.token_hex(6)}")


def make_dirs(directory: Path) -> None:
    """`mkdir -p` that also fsyncs each new directory's parent, so a fresh tree survives a crash."""
    if directory.is_dir():
        return
    make_dirs(directory.parent)
    try:
        directory.mkdir(DIR_MODE)
    except FileExistsError:  # created concurrently, e.g. by another rank on a shared filesystem
        return
    fsync_dir(directory.parent)


def make_temporary(final: Path) -> Path:
    """A new temporary directory beside `final`, for writing what is to be committed as `final`."""
    make_dirs(final.parent)
    temp = sibling(final, "tmp")
    temp.mkdir(DIR_MODE)
    return temp


def delete(path: Path) -> None:
    """Remove a file, a symlink (never what it points to) or a directory tree."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def commit(temp: Path, final: Path) -> None:
    """Rename the complete `temp` to `final`, replacing whatever is there crash-safely.

    An existing `final` (a directory, or a symlink: rename moves the link, never its target) is
    moved aside to ``.old-`` first and deleted only once the new one is durable. Failing to
    delete it is not a failed save: it is warned about and `recover_directory` removes it later.
    """
    if not os.path.lexists(final):
        os.rename(temp, final)
        fsync_dir(final.parent)
        return
    old = sibling(final, "old")
    os.rename(final, old)
    try:
        os.rename(temp, final)
    except BaseException:
        os.rename(old, final)
        raise
    fsync_dir(final.parent)
    try:
        delete(old)
    except OSError as error:
        warnings.warn(f"committed {final} but could not delete the replaced {old}: {error}", stacklevel=3)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint so that it vanishes from listings at once, even if deletion is slow.

    Renaming to ``.del-`` first means a crash mid-rmtree leaves a dot-entry that no listing
    shows and `recover_directory` finishes, never a half-deleted ``*.ckpt`` that looks valid
    until verified. A symlink (``last.ckpt``) is unlinked; its target is left alone.
    """
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        doomed = sibling(path, "del")
        os.rename(path, doomed)
        fsync_dir(path.parent)
        delete(doomed)


def link_checkpoint(link: Path, target: Path) -> None:
    """Point `link` at `target` with a relative symlink, atomically replacing what `link` was.

    Relative, so a run directory can be moved or copied (rsync, another mount point) and its
    links still resolve. The link is made under a temporary name and renamed over `link`; a
    real checkpoint directory at `link` is replaced through the same protocol as a write.
    """
    link, target = Path(link), Path(target)
    if not target.exists():
        raise ValueError(f"target {target} does not exist; link only to a committed checkpoint")
    if not link.name.endswith(CHECKPOINT_SUFFIX):
        raise ValueError(f"link {link} must end in {CHECKPOINT_SUFFIX!r}")
    make_dirs(link.parent)
    parent = os.path.realpath(link.parent)
    target_real = os.path.join(os.path.realpath(target.parent), target.name)
    if target_real == os.path.join(parent, link.name):
        raise ValueError(f"link {link} and target {target} are the same path")
    temp = sibling(link, "tmp")
    os.symlink(os.path.relpath(target_real, parent), temp)
    try:
        if link.is_dir() and not link.is_symlink():
            commit(temp, link)
        else:
            os.replace(temp, link)
            fsync_dir(link.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
