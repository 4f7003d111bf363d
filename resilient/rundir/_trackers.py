"""Experiment-tracker identities: one W&B run, one MLflow run, one TensorBoard version per run.

A requeued job is a new process, and a tracker left to itself starts a new run at every start
(W&B draws a new id, Lightning's `TensorBoardLogger` a new version, MLflow a new run): a run
preempted four times becomes five curves. The identity is made once, by the first start that
asks for it, and kept in ``<run_dir>/trackers.json``; every later start, on any node and any
rank, gets the same one back. It is read and written under the status lock, so ranks asking at
once agree on one identity, and replaced atomically, so a crash leaves the previous file whole.
A new submission into the same run directory resumes the run, and so keeps its identities too.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from pathlib import Path

from ._files import DamagedFile, read_json_object, shorten
from ._layout import STATUS_LOCK_FILE, TRACKERS_FILE
from ._lock import flocked
from ._modes import make_dirs
from ._vocabulary import Vocabulary
from ._write import write_json


class Tracker(Vocabulary):
    """The experiment trackers whose run identity a run keeps."""

    WANDB = "wandb"
    MLFLOW = "mlflow"
    TENSORBOARD = "tensorboard"


# What W&B, MLflow (32 hex digits) and a TensorBoard version directory all accept: nothing that
# could name another directory or break out of a URL, whatever a damaged or forged file holds.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ALPHABET = string.ascii_lowercase + string.digits  # W&B's own ids: 8 of these
_RESET = "delete it to start new tracker runs"


def _new_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"{what} is {shorten(repr(value), 40)}; a tracker id is 1-128 letters, digits, "
                         "'_', '.' or '-', starting with a letter or digit")
    return value


def _read(path: Path) -> dict[str, str]:
    try:
        raw = read_json_object(path) or {}
    except DamagedFile as damage:
        raise DamagedFile(path, f"{damage.why}; {_RESET}") from None
    for name, value in raw.items():
        if name not in {tracker.value for tracker in Tracker}:
            raise DamagedFile(path, f"{shorten(repr(name), 40)} is no tracker "
                              f"({', '.join(tracker.value for tracker in Tracker)}); {_RESET}")
        try:
            _check_id(value, f"the id of {name}")
        except ValueError as problem:
            raise DamagedFile(path, f"{problem}; {_RESET}") from None
    return raw


def tracker_id(run_dir: Path, tracker: Tracker | str, new: Callable[[], str] | None = None) -> str:
    """The run's identity in `tracker`, made the first time it is asked for and the same ever after.

    `new` makes it where the tracker assigns ids itself (MLflow: create the run, return its id);
    otherwise a new id is 8 random lowercase letters and digits, as W&B draws its own. `new` is
    called at most once per run, under the lock. DamagedFile if ``trackers.json`` is not what
    resilient wrote; ValueError if `new` returns something no tracker could use as an id.
    """
    if tracker not in {each.value for each in Tracker}:
        raise ValueError(f"tracker {shorten(repr(tracker), 40)} is none of {', '.join(each.value for each in Tracker)}")
    tracker = Tracker(tracker)
    make_dirs(run_dir)
    path = run_dir / TRACKERS_FILE
    with flocked(run_dir / STATUS_LOCK_FILE):
        ids = _read(path)
        if tracker.value not in ids:
            made = new() if new is not None else _new_id()
            ids[tracker.value] = _check_id(made, f"the new {tracker} id")
            write_json(path, ids, sort_keys=True)
        return ids[tracker.value]
