"""Writing one checkpoint under one or more names, atomically.

Several rules often fire at the same step (top-k, every-N, last). Their checkpoints hold the
same bytes, so the payload is serialized once and the other targets get hard links: one
`torch.save` of a multi-gigabyte state instead of several. Each target still gets its own
manifest, naming the rule that wrote it, and is committed on its own, so deleting one rule's
checkpoint later never touches another's.

When storage refuses a write (a full disk, ``ulimit -f``, a read-only mount), the error is a
`CheckpointWriteError` that names the cause and the file, not torch's "unexpected pos"; the
temporaries are removed, which gives the space back and leaves nothing that looks like a
checkpoint, and older checkpoints are never touched. SIGXFSZ is left alone: CPython ignores it
at startup precisely so that going past ``ulimit -f`` makes write() fail with EFBIG instead of
killing the process, and a library must not switch a process-wide signal disposition around
each save, from whichever thread saves, over a choice the application made.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ._atomic import commit, fsync_dir, make_temporary
from ._errors import CheckpointWriteError
from ._files import create
from ._hashing import HashingWriter
from ._manifest import (
    CHECKPOINT_SUFFIX,
    CheckpointKind,
    FileEntry,
    Manifest,
    name_problem,
    write_manifest,
)

KINDS = tuple(kind.value for kind in CheckpointKind)
Rule = str | Mapping[str, Any]  # a manifest's `rule`: a rule's identity, or a CheckpointOrigin
_COPY_CHUNK = 16 * 1024 * 1024  # a few system calls per gigabyte


def _check_targets(targets: Sequence[tuple[Path, Rule]]) -> list[tuple[Path, Rule]]:
    checked: list[tuple[Path, Rule]] = []
    for target in targets:
        if not isinstance(target, tuple) or len(target) != 2:
            raise TypeError(f"targets must hold (path, rule) pairs, got {target!r}")
        path, rule = Path(target[0]), target[1]
        if not path.name.endswith(CHECKPOINT_SUFFIX) or path.name.startswith("."):
            raise ValueError(f"targets: checkpoint path {path} must end in {CHECKPOINT_SUFFIX!r}, not start with '.'")
        if not isinstance(rule, (str, Mapping)) or not rule:
            raise ValueError(f"targets: the rule for {path} must be a non-empty string or mapping, got {rule!r}")
        checked.append((path, rule if isinstance(rule, str) else dict(rule)))
    if not checked:
        raise ValueError("targets must name at least one (path, rule) pair")
    absolute = [os.path.abspath(path) for path, _ in checked]
    if len(set(absolute)) != len(absolute):
        raise ValueError(f"targets name the same path twice: {[str(path) for path, _ in checked]}")
    return checked


def _check_files(files: Mapping[str, object], *, prewritten: bool = False) -> None:
    if not isinstance(files, Mapping):
        raise TypeError(f"files must be a mapping of file name to object, got {type(files).__name__}")
    if not files and not prewritten:
        raise ValueError("files must hold at least one payload file")
    for name in files:
        problem = name_problem(name) if isinstance(name, str) else "is not a string"
        if problem:
            raise ValueError(f"files: {name!r} {problem}; payload files need plain names (no '/', no leading '.')")


def _check_counters(step: int, epoch: int, world_size: int, kind: str) -> None:
    for label, value, low in (("step", step, 0), ("epoch", epoch, 0), ("world_size", world_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{label} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{label} must be >= {low}, got {value}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name to number, got {type(metrics).__name__}")
    checked = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metrics keys must be strings, got {key!r}")
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError
            checked[key] = float(value)  # also 0-d tensors and numpy scalars, as logged
        except (TypeError, ValueError):
            raise TypeError(f"metrics[{key!r}] must be a number, got {type(value).__name__}") from None
    return checked


def _write_error(error: OSError, checkpoint: Path, file: Path | None) -> CheckpointWriteError:
    filename = error.filename if error.filename is not None else file
    return CheckpointWriteError(
        error.errno, error.strerror or str(error), None if filename is None else os.fsdecode(filename), checkpoint
    )


@contextmanager
def _storage(checkpoint: Path, file: Path | None = None) -> Iterator[None]:
    """Report an OSError as a CheckpointWriteError naming `checkpoint` and the file that failed.

    Only storage operations go inside: an OSError raised by the objects being pickled is the
    caller's, and must keep its own type.
    """
    try:
        yield
    except OSError as error:
        raise _write_error(error, checkpoint, file) from error


@contextmanager
def without_torch_crc32() -> Iterator[None]:
    """torch.save (ours, and DCP's of each shard) without its per-record crc32, which our xxh3 of
    every byte makes redundant.

    It is a sixth of a save's time, and torch's reader does not check it. The setting is
    torch's (per thread in torch 2.13, whose config lives in a context variable), so it is put
    back afterwards; a torch without it (older releases) always computes the crc32.
    """
    set_crc32 = getattr(torch.serialization, "set_crc32_options", None)
    if set_crc32 is None:
        yield
        return
    previous = torch.serialization.get_crc32_options()
    set_crc32(False)
    try:
        yield
    finally:
        set_crc32(previous)


def _save(obj: object, file: Path, checkpoint: Path) -> FileEntry:
    with _storage(checkpoint, file):
        f = create(file, buffering=0)
    with f:
        writer = HashingWriter(f)
        try:
            with without_torch_crc32():
                torch.save(obj, writer)
        except Exception:
            if writer.failure is None:
                raise  # the objects could not be serialized: not a storage error
            raise _write_error(writer.failure, checkpoint, file) from writer.failure
        with _storage(checkpoint, file):
            writer.sync()
    return FileEntry(size=writer.size, checksum=writer.hexdigest())


def _link_or_copy(source: Path, destination: Path) -> None:
    """Hard link, or copy where links are impossible (another filesystem, a FAT mount)."""
    try:
        os.link(source, destination)
    except OSError:
        with open(source, "rb") as reader, create(destination) as writer:
            shutil.copyfileobj(reader, writer, _COPY_CHUNK)
            writer.flush()
            os.fsync(writer.fileno())


def write_files(directory: Path, files: Mapping[str, object], checkpoint: Path) -> dict[str, FileEntry]:
    """Serialize `files` (name -> object for `torch.save`) into `directory`, the temporary of
    `checkpoint` (from `make_temporary`), each fsynced, and return their entries: for
    `write_checkpoint`'s `prewritten`, when they are written while other files are (a sharded
    state's, by every rank), instead of after them. Errors as `write_checkpoint`'s."""
    _check_files(files)
    return {name: _save(obj, Path(directory) / name, Path(checkpoint)) for name, obj in files.items()}


def write_checkpoint(
    targets: Sequence[tuple[Path, Rule]],
    files: Mapping[str, object],
    *,
    step: int,
    epoch: int,
    metrics: Mapping[str, float],
    world_size: int,
    kind: str = CheckpointKind.FULL.value,
    prewritten: tuple[Path, Mapping[str, FileEntry]] | None = None,
) -> list[Manifest]:
    """Commit `files` (name -> object for `torch.save`) under every ``(path, rule)`` target.

    Every target is fully prepared in a temporary directory beside it before the first one is
    committed, so an error while writing leaves none of them; an error while committing leaves
    the already committed ones, each complete. Temporaries are removed on any exception.
    Storage errors are `CheckpointWriteError`; files are 0o644 and directories 0o755 whatever
    the umask (a stricter umask still applies).

    `prewritten` is the first target's temporary directory (from `make_temporary`) holding files
    that others wrote and fsynced there (every rank's shards of a sharded state) and their
    entries: they join `files` (then possibly empty) in each manifest, and the directory is
    removed on failure.
    """
    targets = _check_targets(targets)
    _check_files(files, prewritten=prewritten is not None and bool(prewritten[1]))
    _check_counters(step, epoch, world_size, kind)
    checked_metrics = _metrics(metrics)
    if prewritten is not None and set(prewritten[1]) & set(files):
        raise ValueError(f"prewritten files {sorted(set(prewritten[1]) & set(files))} are also in files")
    temps: list[Path] = [prewritten[0]] if prewritten is not None else []
    try:
        entries: dict[str, FileEntry] = {}
        manifests = []
        for index, (path, rule) in enumerate(targets):
            if index > 0 or prewritten is None:
                with _storage(path):
                    temps.append(make_temporary(path))
            temp = temps[index]
            if index == 0:
                entries = {name: _save(obj, temp / name, path) for name, obj in files.items()}
                entries.update(prewritten[1] if prewritten is not None else {})
            manifest = Manifest(
                step=step,
                epoch=epoch,
                metrics=dict(checked_metrics),
                world_size=world_size,
                kind=CheckpointKind(kind).value,
                rule=rule,
                files=dict(entries),
                created=time.time(),
                package_version=__version__,
            )
            with _storage(path):
                if index > 0:
                    for name in entries:
                        _link_or_copy(temps[0] / name, temp / name)
                write_manifest(temp, manifest)
                fsync_dir(temp)
            manifests.append(manifest)
        for (path, _), temp in zip(targets, temps, strict=True):
            with _storage(path):
                commit(temp, path)
        return manifests
    except BaseException:
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
        raise
