"""Reading the run directory's small files: a damaged one is named, never a traceback.

`resilient status` reads every run under ./runs, so one damaged file (a disk error, a hand
edit, another program's output) must not hide the other runs: readers raise `DamagedFile`,
which names the file and what is wrong with it, and the command line shows that in the run's
row. Fields are checked against the types resilient writes, so that nothing downstream meets a
step that is not a number or a state that is not a state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._lock import RunDirError


class DamagedFile(RunDirError):
    """A file of the run directory cannot be read as what resilient wrote there."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path} is damaged: {why}")
        self.path, self.why = path, why


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path` (None if there is no such file); DamagedFile if it is not one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DamagedFile(path, f"cannot be read ({error.strerror})") from None
    try:
        raw = json.loads(data.decode())
    except ValueError as error:  # UnicodeDecodeError included
        raise DamagedFile(path, f"not JSON ({error})") from None
    if not isinstance(raw, dict):
        raise DamagedFile(path, f"a JSON {type(raw).__name__}, not an object")
    return raw


def type_problem(raw: Mapping[str, Any], types: Mapping[str, tuple[type, ...]]) -> str | None:
    """What is wrong with the fields of `raw` that `types` names (None: nothing); absent fields pass."""
    for name, accepted in types.items():
        if name not in raw:
            continue
        value = raw[name]
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            expected = " or ".join("null" if kind is type(None) else kind.__name__ for kind in accepted)
            return f"{name!r} is {shorten(repr(value), 40)}, not {expected}"
    return None


def shorten(text: str, width: int, *, keep_end: bool = False) -> str:
    """`text`, cut to `width` characters with an ellipsis if it is longer (at its start with `keep_end`)."""
    if len(text) <= width:
        return text
    kept = max(width - 3, 0)
    return "..." + text[len(text) - kept:] if keep_end else text[:kept] + "..."
