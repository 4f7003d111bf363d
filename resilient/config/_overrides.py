"""`-o key.path=value` overrides, applied to the parsed file before anything is validated.

Overrides go through the same validation as the file, so an override cannot smuggle in what the
file may not say; they only change where an error is reported: at the override, since the
file's line is not where the bad value came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ._errors import (
    ConfigError,
    KeyPath,
    Origins,
    format_key,
    kind,
    override_label,
    shown,
)
from ._yaml import parse_value

_SEGMENT = re.compile(r"(?P<name>[A-Za-z0-9_-]+)(?P<indices>(?:\[\d+\])*)")
_EXAMPLE = "e.g. -o resources.nodes=2 or -o checkpoint[0].save_top_k=3"


def apply_overrides(data: dict[str, Any], origins: Origins, overrides: Sequence[str]) -> None:
    """Set each `key.path=value` in `data`, the value read as YAML (`lr=0.1` is a float)."""
    for text in overrides:
        label = override_label(text)
        key, equals, raw = text.partition("=")
        if not equals:
            raise ConfigError(f"an override is key.path=value, {_EXAMPLE}", origin=label)
        path = _parse_key(key, label)
        set_value(data, origins, path, parse_value(raw, label, format_key(path)), label)


def set_value(data: dict[str, Any], origins: Origins, path: KeyPath, value: Any, label: str) -> None:
    """Put `value` at `path`, creating missing mappings on the way; `label` is where it came from."""
    container: Any = data
    for depth, part in enumerate(path[:-1]):
        child = _child(container, path[: depth + 1], label)
        if child is None:  # absent, or a key written without a value
            child = {}
            container[part] = child
            origins.overrides.setdefault(path[: depth + 1], label)
        container = child
    _child(container, path, label)
    container[path[-1]] = value
    # What the file said below this key is gone: its lines no longer locate anything.
    for known in (origins.lines, origins.overrides):
        for stale in [p for p in known if p[: len(path)] == path]:
            del known[stale]
    origins.overrides[path] = label


def _child(container: Any, path: KeyPath, label: str) -> Any:
    """`container[path[-1]]` (None when absent) after checking that it can be indexed so."""
    part, parent = path[-1], format_key(path[:-1]) or "the file"
    if isinstance(part, int):
        if not isinstance(container, list):
            raise ConfigError(f"{parent} is {kind(container)}, not a list, so [{part}] cannot index it",
                              origin=label, key=format_key(path))
        if part >= len(container):
            raise ConfigError(f"index out of range: {parent} has {len(container)} item(s)",
                              origin=label, key=format_key(path))
        return container[part]
    if not isinstance(container, dict):
        raise ConfigError(f"{parent} is {kind(container)}, not a mapping, so it has no key {part!r}",
                          origin=label, key=format_key(path))
    return container.get(part)


def _parse_key(key: str, label: str) -> KeyPath:
    if not key:
        raise ConfigError(f"the key before '=' is empty; {_EXAMPLE}", origin=label)
    path: list[str | int] = []
    for segment in key.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise ConfigError(f"{shown(key)} is not a key path; {_EXAMPLE}", origin=label)
        path.append(match["name"])
        path.extend(int(index) for index in re.findall(r"\d+", match["indices"]))
    return tuple(path)
