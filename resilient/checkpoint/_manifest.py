"""The manifest: what a committed checkpoint holds, and proof that it is whole.

MANIFEST.json is written last, inside the temporary directory, so its presence in a committed
``*.ckpt`` directory means every payload file listed was fully written and fsynced first.

On disk it is an envelope ``{"manifest": {...}, "checksum": "..."}`` whose checksum is the
xxh3-128 of the canonical ``json.dumps(inner, sort_keys=True)``. The envelope and its checksum
are frozen across format versions, so any reader can authenticate a manifest before it
interprets the version number inside. A manifest of a known version must also be byte for byte
what the writer renders for its content: a flipped digit deep in a float (``...5385`` to
``...5384``) can parse to the same double, pass the checksum, and still be a sign of a bad disk.

Non-finite metrics (a diverged loss is NaN) are stored as the strings ``"nan"``, ``"inf"``
and ``"-inf"``: the file stays strict JSON that ``jq`` and other tools can read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._hashing import ALGORITHM, checksum_bytes

FORMAT_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
CHECKPOINT_SUFFIX = ".ckpt"


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete, corrupt or of an unknown format; str() names the path and why."""


class UntrustedCheckpointError(CheckpointError):
    """A sound checkpoint that holds arbitrary pickled objects, refused under weights_only loading."""


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
    rule: str
    files: dict[str, FileEntry]
    created: float
    package_version: str
    format_version: int = FORMAT_VERSION
    checksum_algorithm: str = ALGORITHM


def _canonical(inner: dict[str, Any]) -> bytes:
    return json.dumps(inner, sort_keys=True, allow_nan=False).encode()


def _encode_metric(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _render(inner: dict[str, Any]) -> bytes:
    envelope = {"manifest": inner, "checksum": checksum_bytes(_canonical(inner))}
    return (json.dumps(envelope, indent=2, allow_nan=False) + "\n").encode()


def encode_manifest(manifest: Manifest) -> bytes:
    """The MANIFEST.json bytes: indented in field order for people, checksummed over the canonical form."""
    inner = dataclasses.asdict(manifest)
    inner["metrics"] = {key: _encode_metric(value) for key, value in manifest.metrics.items()}
    return _render(inner)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write and fsync MANIFEST.json; the directory is still temporary, so no rename is needed."""
    with open(directory / MANIFEST_NAME, "xb") as f:
        f.write(encode_manifest(manifest))
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
        rule=_typed(inner, "rule", str),
        files={name: FileEntry(_typed(e, "size", int), _typed(e, "checksum", str)) for name, e in files.items()},
        created=float(_typed(inner, "created", (int, float))),
        package_version=_typed(inner, "package_version", str),
        format_version=_typed(inner, "format_version", int),
        checksum_algorithm=_typed(inner, "checksum_algorithm", str),
    )


def read_manifest(path: Path) -> Manifest:
    """The authenticated manifest of the checkpoint directory `path`; CheckpointError otherwise."""
    path = Path(path)
    if not path.is_dir():
        why = "is not a directory (a single-file checkpoint from another tool?)" if path.exists() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {why}")
    try:
        raw = (path / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no {MANIFEST_NAME}: it was never completely written") from None
    except OSError as error:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_NAME} cannot be read ({error})") from None
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
    if raw != _render(inner):
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_NAME} is corrupt (its text differs from what was written)")
    try:
        manifest = _decode(inner)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_NAME} is malformed ({error!r})") from None
    if manifest.checksum_algorithm != ALGORITHM:
        raise CheckpointError(f"checkpoint {path} uses unknown checksum algorithm {manifest.checksum_algorithm!r}")
    return manifest
