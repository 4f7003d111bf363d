"""Repairing a checkpoint directory after the process died in the middle of a change.

Only the main process writes checkpoints, and this runs before it writes any, so every dot-name
found is the remains of a dead process, never work in progress (see `_atomic` for the names).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from ._atomic import LEFTOVER, delete, fsync_dir
from ._errors import CheckpointError
from ._manifest import CHECKPOINT_SUFFIX
from ._read import verify


def _newest_complete(temps: list[Path]) -> Path | None:
    complete = []
    for temp in temps:
        try:
            complete.append((verify(temp).created, temp))
        except CheckpointError:
            continue
    return max(complete)[1] if complete else None


def recover_directory(directory: Path) -> None:
    """Finish or undo interrupted writes, replacements and deletions in `directory`.

    A replacement interrupted after the old checkpoint was moved aside is rolled forward when
    the new one is complete (its manifest verifies) and back otherwise, so the name never ends
    up missing. Unfinished temporaries and deletions are removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return
    leftovers: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for name in sorted(os.listdir(directory)):
        match = LEFTOVER.match(name)
        if match:
            leftovers[match["name"]][match["state"]].append(directory / name)
    for name, states in leftovers.items():
        final = directory / name
        if states["old"] and not os.path.lexists(final):
            os.rename(_newest_complete(states["tmp"]) or states["old"][0], final)
            fsync_dir(directory)
        for leftover in states["old"] + states["tmp"] + states["del"]:
            if os.path.lexists(leftover):
                delete(leftover)


def is_checkpoint_entry(name: str) -> bool:
    """Whether a directory entry is a checkpoint or one of its leftovers (what `recover_directory` tidies)."""
    return name.endswith(CHECKPOINT_SUFFIX) or LEFTOVER.match(name) is not None
