"""Opening a checkpoint's files: what a reader refuses, and what a writer guarantees.

A checkpoint directory may have been damaged or forged (copied between clusters, edited by
hand), and neither a resume nor `resilient checkpoints --verify` may hang on it or read outside
it. So a reader opens the directory once and every file relative to that descriptor, never
follows a symlink inside it (the directory itself may be one: that is how ``last.ckpt`` points
at a checkpoint), opens without blocking (a FIFO would wait forever for a writer), accepts only
regular files, and reads at most one byte more than the size it expects: enough to tell a
larger file from an exact one, never /dev/zero's endless stream. Every failure is a
`CheckpointError` that names the file and why.

A writer creates files 0o644 and directories 0o755, narrowed further by a stricter umask but
never widened by a looser one: a job running under ``umask 000`` must not leave checkpoints
that anyone can rewrite. Hard links share their file's mode; a symlink's mode means nothing.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ._errors import CheckpointError

FILE_MODE = 0o644
DIR_MODE = 0o755
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def create(path: Path, *, buffering: int = -1) -> BinaryIO:
    """A new file open for writing, FILE_MODE or stricter; FileExistsError if `path` exists."""
    return os.fdopen(os.open(path, _CREATE, FILE_MODE), "wb", buffering=buffering)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "an unknown kind of file")


def _why_not_a_directory(path: Path, error: OSError) -> str:
    """Why the checkpoint `path` cannot be opened, in the words a user would search for."""
    try:
        link: str | None = os.readlink(path)
    except OSError:
        link = None
    if error.errno == errno.ELOOP:
        return "is a symbolic link loop"
    if error.errno == errno.ENOENT:
        return f"is a dangling symbolic link to {link}" if link is not None else "does not exist"
    if error.errno == errno.ENOTDIR:
        if link is not None:
            return f"is a symbolic link to {link}, which is not a directory"
        try:
            kind = _kind(os.lstat(path).st_mode)
        except OSError:
            return "is not a directory"
        hint = " (a single-file checkpoint from another tool?)" if kind == _KINDS[stat.S_IFREG] else ""
        return f"is not a directory but {kind}{hint}"
    return f"cannot be opened ({error.strerror})"


@contextmanager
def open_checkpoint(path: Path) -> Iterator[int]:
    """A descriptor of the checkpoint directory `path` (through a symlink if it is one)."""
    try:
        directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} {_why_not_a_directory(path, error)}") from None
    try:
        yield directory
    finally:
        os.close(directory)


def _regular_size(result: os.stat_result, what: str) -> int:
    if not stat.S_ISREG(result.st_mode):
        raise CheckpointError(f"{what} is {_kind(result.st_mode)}, not a regular file")
    return result.st_size


def _unusable(error: OSError, what: str, missing: str | None) -> CheckpointError:
    if error.errno == errno.ENOENT:
        return CheckpointError(missing or f"{what} is missing")
    if error.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink: the only one a plain name can hold
        return CheckpointError(f"{what} is a symbolic link, not a regular file")
    return CheckpointError(f"{what} cannot be read ({error.strerror})")


def member_size(directory: int, name: str, what: str) -> int:
    """The size of the regular file `name` in `directory`, from one lstat: fast verification."""
    try:
        return _regular_size(os.stat(name, dir_fd=directory, follow_symlinks=False), what)
    except OSError as error:
        raise _unusable(error, what, None) from None


@contextmanager
def open_member(directory: int, name: str, what: str, *, missing: str | None = None) -> Iterator[tuple[int, int]]:
    """(descriptor, size) of the regular file `name` in `directory`.

    `what` names the file in errors ("checkpoint X: payload file Y"); `missing` replaces the
    message for a file that is not there. Reading errors inside the block become CheckpointError
    too, so that no OSError escapes a check of a damaged checkpoint.
    """
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=directory)
        try:
            yield fd, _regular_size(os.fstat(fd), what)
        finally:
            os.close(fd)
    except OSError as error:
        raise _unusable(error, what, missing) from None


def read_exactly(fd: int, size: int, what: str) -> bytes:
    """The `size` bytes of `fd`, in one buffer (no copy of a multi-gigabyte payload).

    At most one byte more is read: a file that holds more, or fewer, than its size said changed
    under us (or lies about its size, as procfs files do) and is refused.
    """
    with open(fd, "rb", buffering=io.DEFAULT_BUFFER_SIZE, closefd=False) as file:  # sized: no isatty() call
        data = file.read(size + 1)
    check_length(len(data), size, what)
    return data


def check_extent(fd: int, size: int, what: str) -> None:
    """Refuse a file that does not end at `size`, from its last byte and the one past it.

    What a reader needs before it maps a file: torch maps and reads whatever the file holds,
    beyond what was hashed, and touching a mapping past a file's real end kills the process.
    """
    shorter = size > 0 and not os.pread(fd, 1, size - 1)
    if shorter or os.pread(fd, 1, size):
        raise _changed_size(what, size)


def check_length(length: int, size: int, what: str) -> None:
    """Refuse a file from which `length` bytes were read, when its size said `size`."""
    if length != size:
        raise _changed_size(what, size)


def _changed_size(what: str, size: int) -> CheckpointError:
    return CheckpointError(f"{what} changed size while it was read (expected {size} bytes)")
