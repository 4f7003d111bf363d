"""A job file's `sweep:`: which `args` overrides make its tasks, what each task is named, and what is refused.

A sweep is one job run many times with different arguments, submitted as one SLURM array (or as
one local job per task). Array tasks share one batch script, so only the function's arguments
can differ between them: a key is `args.NAME` (or `args.NAME.SUB` inside a mapping argument),
never a resource or a SLURM setting. A task's values also name its run directory
(`lr=0.001,seed=0`), so they are scalars, and strings are plain tokens: nothing that could leave
the sweep's directory, or reach a shell. Everything here is decided before anything is submitted
and reported as one line at the key that is wrong.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..settings import MAX_SWEEP_TASKS
from ._errors import Invalid, KeyPath, given, shown

SWEEP_KEY = re.compile(r"args(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_TOKEN = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
TOKEN_CHARACTERS = "letters, digits, '_', '.', '+' and '-'"
# A task's directory name stays well under every file system's 255 bytes; a longer one keeps its
# start, readable, and ends in a digest of the whole, so that it stays unique and stable.
_LONGEST_NAME = 100
_KEPT = 80


def check_key(key: str) -> str:
    """A sweep key: `args.NAME[.SUB...]`."""
    if not SWEEP_KEY.fullmatch(key):
        raise ValueError(
            f"{shown(key)} is refused: a sweep key is args.NAME (or args.NAME.SUB); the array's tasks share "
            "one batch script, so resources, slurm and other settings cannot differ between tasks")
    return key


def check_value(value: Any) -> Any:
    """A value a task may give a swept argument: a scalar that can name a directory."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{shown(value)} is refused: a swept number must be finite")
        return value
    if isinstance(value, str):
        if not _TOKEN.fullmatch(value):
            raise ValueError(
                f"{shown(value)} is refused: a swept string names the task's directory, so it may hold only "
                f"{TOKEN_CHARACTERS}, at most 64 (no '/', spaces, quotes or shell characters)")
        return value
    raise ValueError(f"must be a number, a plain string, true, false or null, not {given(value)}: "
                     "each value names a task")


def check_values(values: list[Any]) -> list[Any]:
    """A grid's list of values for one key."""
    if not values:
        raise ValueError("an empty list makes no task; give at least one value")
    return values


def check_task(task: dict[str, Any]) -> dict[str, Any]:
    """One explicit task's overrides."""
    if not task:
        raise ValueError("a task sets at least one args key")
    return task


def _text(value: Any) -> str:
    """A value as a task's name shows it: as YAML would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def task_name(overrides: Mapping[str, Any]) -> str:
    """`lr=0.001,seed=0`: the task's directory, the same at every submission of the same sweep.

    Keys come in alphabetical order (without `args.`), so reordering a sweep's keys keeps the
    names; a name longer than 100 characters is cut and ends in a digest of the whole.
    """
    name = ",".join(f"{key.removeprefix('args.')}={_text(overrides[key])}" for key in sorted(overrides))
    if len(name) <= _LONGEST_NAME:
        return name
    return f"{name[:_KEPT]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _same(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Equal overrides, types included (1, 1.0 and true are three tasks)."""
    return first.keys() == second.keys() and all(
        type(first[key]) is type(second[key]) and first[key] == second[key] for key in first)


def expand(grid: Mapping[str, Sequence[Any]], tasks: Sequence[Mapping[str, Any]], *, short: bool) -> list[dict[str, Any]]:
    """Every task of the sweep in order: the grid's combinations (last key varying fastest), then
    the listed tasks. `short`: the grid was written as the sweep itself (its keys are `sweep.KEY`).

    Invalid at the key for too many tasks, a repeated value, a repeated task, or two tasks whose
    names would be the same directory.
    """
    where: KeyPath = ("sweep",) if short else ("sweep", "grid")
    for key, values in grid.items():
        for index, value in enumerate(values):
            earlier = next((i for i, other in enumerate(values[:index]) if _text(other) == _text(value)), None)
            if earlier is not None:
                raise Invalid((*where, key, index), (
                    f"{shown(value)} repeats item {earlier} ({shown(values[earlier])}), which would make the same "
                    "task, or one with the same directory name, twice"))
    count = math.prod(len(values) for values in grid.values()) if grid else 0
    if count + len(tasks) > MAX_SWEEP_TASKS:
        raise Invalid(("sweep",), (
            f"{count + len(tasks)} tasks are more than the {MAX_SWEEP_TASKS} a sweep may have (SLURM's default "
            "MaxArraySize is 1001); split it into several sweeps"))
    expanded = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else []
    names = {task_name(task): position for position, task in enumerate(expanded)}
    for index, task in enumerate(tasks):
        name = task_name(task)
        if name in names:
            other = expanded[names[name]]
            what = (f"the same task as task {names[name]}" if _same(other, task)
                    else f"named {name!r} as task {names[name]} ({shown(other)}) is: their directories would be one")
            raise Invalid(("sweep", "tasks", index), f"{shown(dict(task))} is {what}")
        names[name] = len(expanded)
        expanded.append(dict(task))
    return expanded
