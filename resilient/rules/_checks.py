"""Constructor argument checks that name the offending parameter.

Configurations arrive from YAML as often as from Python, where ``1`` for ``True`` or ``"5"``
for ``5`` are common slips; each check is strict about the type so that such a slip fails at
construction with the parameter's name instead of changing behaviour silently. Every message
quotes the value at fault through ``shown``, which the job file's errors use too, so that no
value, however long, makes an error longer than a line.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from ..settings import shown


def _kind(value: Any) -> str:
    return f"{type(value).__name__}: {shown(value)}"


def check_bool(value: Any, name: str) -> bool:
    """Accept only real booleans: ``1``/``0`` are almost always a misplaced positional value."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {_kind(value)}")
    return value


def check_optional_bool(value: Any, name: str) -> bool | None:
    """``None`` means "decide for me", as in Lightning."""
    return None if value is None else check_bool(value, name)


def check_count(value: Any, name: str, *, minimum: int) -> int:
    """An integer ``>= minimum``; ``bool`` is refused although Python treats it as an ``int``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {_kind(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_optional_count(value: Any, name: str, *, minimum: int) -> int | None:
    return None if value is None else check_count(value, name, minimum=minimum)


def check_monitor(value: Any) -> str | None:
    """An empty name can never match a logged metric, so it is refused rather than ignored."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"monitor must be a str or None, got {_kind(value)}")
    if not value:
        raise ValueError("monitor must not be an empty string; use None to save the latest")
    return value


def check_mode(value: Any) -> Literal["min", "max"]:
    if not isinstance(value, str):
        raise TypeError(f"mode must be 'min' or 'max', got {_kind(value)}")
    if value not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {shown(value)}")
    return value  # type: ignore[return-value]


def check_save_last(value: Any) -> bool | Literal["link"] | None:
    if value is None or isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise TypeError(f"save_last must be None, True, False or 'link', got {_kind(value)}")
    if value != "link":
        raise ValueError(f"save_last must be None, True, False or 'link', got {shown(value)}")
    return "link"


def check_dirpath(value: Any) -> str | None:
    """The path as text; an empty string would silently mean the current directory."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"dirpath must be a str, os.PathLike or None, got {_kind(value)}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"dirpath must be a text path, got {_kind(text)}")
    if not text:
        raise ValueError("dirpath must not be an empty string; use None for the run's default")
    if "\0" in text:
        raise ValueError(f"dirpath must not contain NUL characters, got {shown(text)}")
    return text


def check_filename(value: Any) -> str | None:
    """``None`` or ``""`` selects the default template, as in Lightning; the template itself is
    checked by ``_filename.check_template``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"filename must be a str or None, got {_kind(value)}")
    return value or None
