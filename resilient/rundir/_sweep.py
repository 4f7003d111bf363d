"""`sweep.json`: the task table of a sweep, which turns its directory into a group of runs.

A sweep (`sweep:` in a job file) is many runs of one job, each task in its own run directory
inside the sweep's. The table says which directories are its tasks, in which order, and what each
one overrides, so that `resilient status`, `cancel`, `preempt` (and a report) can treat the sweep
as one thing without guessing from directory names. It is written whole and atomically by the
submission, and read like every other file here: a damaged one is a `DamagedFile` naming what is
wrong, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import DamagedFile, read_json_object, shorten, type_problem
from ._layout import SWEEP_FILE
from ._record import Executor
from ._write import write_json

_RESUBMIT = "submitting the job file again rewrites it"


@dataclass(frozen=True)
class SweepTask:
    """One task of a sweep: its place in the array, its name, what it overrides, its run directory."""

    index: int
    name: str
    overrides: dict[str, Any]  # "args.lr" -> 0.001, as the job file's sweep wrote it
    run_dir: Path  # <sweep dir>/<name>


@dataclass(frozen=True)
class Sweep:
    """A submitted sweep: its directory, executor, the SLURM array's id, and its tasks in order."""

    path: Path
    name: str
    executor: str
    job_id: str | None  # the SLURM array's id; None for local jobs, which each have their own
    max_parallel: int | None  # SLURM's %N: at most this many tasks run at once (None: no limit)
    tasks: tuple[SweepTask, ...]


def write_sweep(sweep: Sweep) -> None:
    """Replace the sweep's table in one durable step."""
    write_json(sweep.path / SWEEP_FILE, {
        "name": sweep.name, "executor": sweep.executor, "job_id": sweep.job_id, "max_parallel": sweep.max_parallel,
        "tasks": [{"index": task.index, "name": task.name, "overrides": task.overrides, "dir": task.run_dir.name}
                  for task in sweep.tasks],
    })


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "executor": (str,), "job_id": (str, type(None)), "max_parallel": (int, type(None)),
    "tasks": (list,),
}
_TASK_TYPES: dict[str, tuple[type, ...]] = {"index": (int,), "name": (str,), "overrides": (dict,), "dir": (str,)}


def _task_problem(position: int, raw: object, seen: set[str]) -> str | None:
    if not isinstance(raw, dict):
        return f"task {position} is not an object"
    missing = [name for name in _TASK_TYPES if name not in raw]
    problem = f"no {missing[0]!r}" if missing else type_problem(raw, _TASK_TYPES)
    if problem is None and raw["index"] != position:
        problem = f"index {raw['index']} where {position} was expected"
    directory = raw.get("dir")
    if problem is None and (directory in ("", ".", "..") or "/" in directory or directory.startswith(".")):
        problem = f"dir {shorten(repr(directory), 40)} is not a directory name"
    if problem is None and directory in seen:
        problem = f"dir {shorten(repr(directory), 40)} appears twice"
    return None if problem is None else f"task {position}: {problem}"


def read_sweep(path: Path) -> Sweep | None:
    """The sweep in `path` (None: no sweep was submitted there); DamagedFile if its table is unreadable.

    The tasks come in the array's order, each with its run directory inside `path`.
    """
    file = path / SWEEP_FILE
    raw = read_json_object(file)
    if raw is None:
        return None
    missing = [name for name in _FIELD_TYPES if name not in raw]
    problem = f"no {missing[0]!r}" if missing else type_problem(raw, _FIELD_TYPES)
    if problem is None and raw["executor"] not in {executor.value for executor in Executor}:
        problem = f"executor {raw['executor']!r:.40} is none of {', '.join(executor.value for executor in Executor)}"
    seen: set[str] = set()
    for position, task in enumerate(raw["tasks"] if problem is None else ()):
        problem = _task_problem(position, task, seen)
        if problem is not None:
            break
        seen.add(task["dir"])
    if problem is None and not seen:
        problem = "it lists no task"
    if problem is not None:
        raise DamagedFile(file, f"{problem}; {_RESUBMIT}")
    tasks = tuple(SweepTask(task["index"], task["name"], task["overrides"], path / task["dir"]) for task in raw["tasks"])
    return Sweep(path, raw["name"], raw["executor"], raw["job_id"], raw["max_parallel"], tasks)
