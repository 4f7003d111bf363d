"""The manifest: what a committed checkpoint holds, and proof that it is whole.

MANIFEST.json is written last, inside the temporary directory, so its presence in a committed
``*.ckpt`` directory means every payload file listed was fully written and fsynced first.

On disk it is an envelope ``{"manifest": {...}, "checksum": "..."}`` whose checksum is the
xxh3-128 of the canonical ``json.dumps(inner, sort_keys=True)``. The envelope and its checksum
are frozen across format versions, so any reader can authenticate a manifest before it
interprets the version number inside. A manifest of a known version must also be byte for byte
what the writer renders for its content: a flipped digit deep in a float (``...5385`` to
``...5384``) can parse to the same double, pass the checksum, and still be a sign of a bad disk.

The ``rule`` that asked for a checkpoint is a rule's identity, a JSON object (format 2), or a
string: a `CheckpointOrigin` for checkpoints no rule planned, or, in format 1, a rule's identity
as a Python repr, which readers compare but never parse.

Non-finite metrics (a diverged loss is NaN) are stored as the strings ``"nan"``, ``"inf"``
and ``"-inf"``: the file stays strict JSON that ``jq`` and other tools can read.

A manifest is also the one thing that tells a reader which files to open, so a forged one must
not point anywhere else: it may only list plain names inside its own directory, and it may
not be larger than MAX_MANIFEST_BYTES.

A sharded state (format 3) is a `torch.distributed.checkpoint` in the checkpoint's own directory:
each rank's shard files and DCP's ``.metadata``, listed and checksummed like any payload file, so
verification, fallback and retention treat them as they treat ``state.pt``. A reader of format
2 refuses such a checkpoint (it would miss the sharded objects) instead of loading half of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..rundir import Vocabulary
from ._errors import CheckpointError
from ._files import create, open_checkpoint, open_member, read_exactly
from ._hashing import ALGORITHM, checksum_bytes

FORMAT_VERSION = 3  # 2: `rule` may be a JSON object; 3: may hold a sharded state (`SHARDS_METADATA`)
MANIFEST_NAME = "MANIFEST.json"
CHECKPOINT_SUFFIX = ".ckpt"
# torch.distributed.checkpoint's own index of a sharded state, beside its per-rank shard files:
# the one payload name that starts with '.', kept as DCP names it so its readers find it.
SHARDS_METADATA = ".metadata"
_SHARD_FILE = re.compile(r"__(\d+)_\d+\.distcp")  # DCP's file of rank r's shards: __{r}_{n}.distcp


def shard_writer(name: str) -> int | None:
    """The rank that wrote shard file `name` (DCP's naming), or None for any other file."""
    match = _SHARD_FILE.fullmatch(name)
    return int(match.group(1)) if match else None


# About 75,000 payload files: far more ranks than any job has, far less memory than a load takes.
MAX_MANIFEST_BYTES = 8 * 1024 * 1024


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a payload file's name (None if it can): only plain names inside the checkpoint."""
    if not name:
        return "is empty"
    if "\0" in name:
        return "contains a NUL byte"
    if name.startswith("/"):
        return "is an absolute path"
    if "/" in name or os.sep in name:
        return "is a path, not a plain file name"
    if name.startswith(".") and name != SHARDS_METADATA:  # also "." and ".."
        return "starts with '.'"
    if name == MANIFEST_NAME:
        return "is the manifest itself"
    return None


class CheckpointKind(Vocabulary):
    """What a checkpoint holds: everything to resume a run, or the model's weights alone."""

    FULL = "full"
    WEIGHTS = "weights"


class CheckpointOrigin(Vocabulary):
    """The manifest's `rule` of a checkpoint no rule planned."""

    EMERGENCY = "emergency"  # taken at a stop (a signal, the deadline) to resume from
    MANUAL = "manual"  # Run.save_checkpoint
    LIGHTNING = "lightning"  # a Lightning Trainer's save (its ModelCheckpoint, trainer.save_checkpoint)
    HUGGINGFACE = "huggingface"  # a Hugging Face Trainer's checkpoint-N, sealed after the Trainer wrote it
    ACCELERATE = "accelerate"  # an Accelerate save_state directory, sealed and renamed into place


@dataclass(frozen=True)
class FileEntry:
    """One payload file as committed: its size in bytes and xxh3-128 hex checksum."""

    size: int
    checksum: str


@dataclass(frozen=True)
class Manifest:
    """Everything known about a committed checkpoint without reading its payload."""

    step: int
    epoch: int
    metrics: dict[str, float]
    world_size: int
    kind: str
    rule: str | dict[str, Any]
    files: dict[str, FileEntry]
    created: float
    package_version: str
    format_version: int = FORMAT_VERSION
    checksum_algorithm: str = ALGORITHM


def _canonical(inner: dict[str, Any]) -> bytes:
    return json.dumps(inner, sort_keys=True, allow_nan=False).encode()


def _encode_metric(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _render(inner: dict[str, Any], checksum: str | None = None) -> bytes:
    """The file's text; `checksum`, when the caller has it, is that of `_canonical(inner)`."""
    envelope = {"manifest": inner, "checksum": checksum_bytes(_canonical(inner)) if checksum is None else checksum}
    return (json.dumps(envelope, indent=2, allow_nan=False) + "\n").encode()


def encode_manifest(manifest: Manifest) -> bytes:
    """The MANIFEST.json bytes: indented in field order for people, checksummed over the canonical form."""
    inner = dataclasses.asdict(manifest)
    inner["metrics"] = {key: _encode_metric(value) for key, value in manifest.metrics.items()}
    return _render(inner)


def write_manifest(directory: Path, manifest: Manifest, name: str = MANIFEST_NAME) -> None:
    """Write and fsync MANIFEST.json (or `name`, to be renamed to it when the directory is not
    temporary: `seal_checkpoint`); in a temporary directory no rename is needed."""
    data = encode_manifest(manifest)
    if len(data) > MAX_MANIFEST_BYTES:  # a checkpoint no reader would accept is not worth writing
        raise ValueError(
            f"{MANIFEST_NAME} would have {len(data)} bytes, more than the {MAX_MANIFEST_BYTES} readers accept: "
            f"{len(manifest.files)} files and {len(manifest.metrics)} metrics are too many"
        )
    with create(directory / name) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _typed(mapping: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"field {key!r} has type {type(value).__name__}")
    return value


def _decode(inner: dict[str, Any]) -> Manifest:
    files = _typed(inner, "files", dict)
    metrics = _typed(inner, "metrics", dict)
    return Manifest(
        step=_typed(inner, "step", int),
        epoch=_typed(inner, "epoch", int),
        metrics={str(key): float(value) for key, value in metrics.items()},
        world_size=_typed(inner, "world_size", int),
        kind=_typed(inner, "kind", str),
        rule=_typed(inner, "rule", (str, dict)),
        files={name: FileEntry(_typed(e, "size", int), _typed(e, "checksum", str)) for name, e in files.items()},
        created=float(_typed(inner, "created", (int, float))),
        package_version=_typed(inner, "package_version", str),
        format_version=_typed(inner, "format_version", int),
        checksum_algorithm=_typed(inner, "checksum_algorithm", str),
    )


def read_manifest(path: Path) -> Manifest:
    """The authenticated manifest of the checkpoint directory `path`; CheckpointError otherwise."""
    path = Path(path)
    with open_checkpoint(path) as directory:
        return read_manifest_at(directory, path)


def read_manifest_at(directory: int, path: Path) -> Manifest:
    """`read_manifest` of the checkpoint `path`, already open as `directory`."""
    what = f"checkpoint {path}: {MANIFEST_NAME}"
    missing = f"checkpoint {path} has no {MANIFEST_NAME}: it was never completely written"
    with open_member(directory, MANIFEST_NAME, what, missing=missing) as (fd, size):
        if size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"{what} has {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have")
        raw = read_exactly(fd, size, what)
    try:
        envelope = json.loads(raw)
        inner, checksum = envelope["manifest"], envelope["checksum"]
        canonical = _canonical(inner)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_NAME} is unreadable ({error!r})") from None
    if not isinstance(inner, dict) or checksum != checksum_bytes(canonical):
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_NAME} is corrupt (its checksum does not match)")
    version = inner.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, written by resilient "
            f"{inner.get('package_version')}; this version reads format {FORMAT_VERSION} at most: upgrade resilient"
        )
    if raw != _render(inner, checksum):  # the checksum was just found to be the canonical form's
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_NAME} is corrupt (its text differs from what was written)")
    try:
        manifest = _decode(inner)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_NAME} is malformed ({error!r})") from None
    if manifest.checksum_algorithm != ALGORITHM:
        raise CheckpointError(f"checkpoint {path} uses unknown checksum algorithm {manifest.checksum_algorithm!r}")
    for name, entry in manifest.files.items():
        problem = name_problem(name) or ("has a negative size" if entry.size < 0 else None)
        if problem:
            raise CheckpointError(f"{what} lists {name!r}, which {problem}")
    return manifest
