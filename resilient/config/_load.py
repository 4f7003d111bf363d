"""From a job file (plus overrides) to a `JobSpec` that submission can use as it is.

The order of the stages is the order in which a mistake can be noticed: YAML first, then the
overrides, then the schema (types, ranges, unknown keys), and only then what needs the outside
world (importing the entrypoint, the run directory), so a typo is never hidden behind an import
error. Nothing is created on disk, successful or not.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..requeue import NOTIFY_STATES, Notify
from ..rules import ModelCheckpoint, RuleConflict, check_rule_set, rule_list
from ..rundir import checkpoints_dir, emergency_dir
from ..settings import LOCAL_TASKS_PER_CPU, InvalidSetting, check_nodes, run_dir_for
from ..submission import JobOptions
from ._entrypoint import check_args, import_entrypoint
from ._errors import ConfigError, Invalid, KeyPath, Origins
from ._messages import explain
from ._model import Checkpoint, JobFile, Sweep
from ._model import Notify as NotifySection
from ._overrides import apply_overrides, set_value
from ._run_dir import check_not_shared, check_run_dir, check_sweep_dir
from ._sweep import expand, task_name
from ._values import NAME, to_minutes, to_notify_seconds, to_seconds
from ._yaml import parse

# Job files are a few hundred bytes; one this large is a mistake (or an attack on the loader).
MAX_FILE_BYTES = 256 * 1024

# Where the file sets each JobOptions field (run_dir is computed separately: it has a default
# that depends on the name).
_FIELDS: dict[str, KeyPath] = {
    "checkpoint": ("checkpoint",),
    "run_dir": ("run_dir",),
    "executor": ("executor",),
    "nodes": ("resources", "nodes"),
    "tasks_per_node": ("resources", "tasks_per_node"),
    "gpus_per_node": ("resources", "gpus_per_node"),
    "cpus_per_task": ("resources", "cpus_per_task"),
    "mem_gb": ("resources", "mem_gb"),
    "timeout_min": ("resources", "time"),
    "partition": ("slurm", "partition"),
    "account": ("slurm", "account"),
    "qos": ("slurm", "qos"),
    "warning_signal": ("slurm", "signal"),
    "signal_delay_s": ("slurm", "signal_delay"),
    "slurm_options": ("slurm", "options"),
    "max_requeues": ("requeue", "max_requeues"),
    "max_crash_requeues": ("requeue", "max_crash_requeues"),
    "on_save_error": ("on_save_error",),
    "async_save": ("async_save",),
    "notify": ("notify",),
}


@dataclass(frozen=True)
class JobSpec:
    """A job file, resolved and checked: everything needed to run or submit the job."""

    source: Path                   # the job file, absolute
    name: str                      # `name`, default: the entrypoint function's __name__
    entrypoint: str                # "package.module:function" as written
    function: Callable[..., Any]   # the plain function (a @resilient.job Job is unwrapped)
    args: dict[str, Any]           # keyword arguments for the function (after `run`)
    options: JobOptions            # ready for submission; run_dir absolute
    fire_drill_step: int | None    # fire_drill.preempt_at_step
    resolved: dict[str, Any]       # the whole config as plain YAML data (defaults filled,
                                   # overrides applied, durations as written), for the run dir


def load_job_file(path: str | os.PathLike[str], overrides: Sequence[str] = (),
                  executor: str | None = None) -> JobSpec | SweepSpec:
    """Read, override, validate and resolve a job file; any mistake is a one-line ConfigError.

    A file with a `sweep` gives a SweepSpec: each task resolved as the file with the task's
    overrides, applied after `overrides`.

    `overrides` are "key.path=value" strings (the value read as YAML); `executor`, when given,
    acts as one more override of `executor`, applied last.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(f"cannot read the job file: {reason}", origin=source) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"the file is larger than {MAX_FILE_BYTES // 1024} KiB; a job file this large is refused",
                          origin=source)
    data, lines = parse(text, source)
    origins = Origins(source, lines)
    apply_overrides(data, origins, overrides)
    if executor is not None:
        set_value(data, origins, ("executor",), executor, f"executor argument {executor!r}")
    # A key written without a value (`checkpoint:`) means its default, as if it were absent.
    data = {key: value for key, value in data.items() if value is not None}
    single_checkpoint = isinstance(data.get("checkpoint"), dict)
    if single_checkpoint:
        data["checkpoint"] = [data["checkpoint"]]
    short_sweep = _short_sweep(data)

    def as_written(problem: Invalid) -> Invalid:
        """Report a single checkpoint mapping's keys as `checkpoint.x`, and a short sweep's as
        `sweep.args.x`, where they were written."""
        if single_checkpoint and problem.path[:2] == ("checkpoint", 0):
            return Invalid(("checkpoint", *problem.path[2:]), problem.message)
        if short_sweep and problem.path[:2] == ("sweep", "grid"):
            return Invalid(("sweep", *problem.path[2:]), problem.message)
        return problem

    model = _validate(data, origins, as_written)
    if model.sweep is not None:
        return _load_sweep(model, data, origins, as_written, Path(source).absolute(), short=short_sweep)
    try:
        return _resolve(model, Path(source).absolute())
    except Invalid as problem:
        raise origins.locate(as_written(problem)) from None


def _validate(data: dict[str, Any], origins: Origins, as_written: Callable[[Invalid], Invalid]) -> JobFile:
    try:
        return JobFile.model_validate(data)
    except ValidationError as error:
        raise origins.first(as_written(explain(details)) for details in error.errors()) from None


def _short_sweep(data: dict[str, Any]) -> bool:
    """Turn a sweep written as its grid (`sweep: {args.lr: [...], max_parallel: 2}`) into the long
    form (`sweep: {grid: {args.lr: [...]}, max_parallel: 2}`); returns whether it was short."""
    sweep = data.get("sweep")
    if not isinstance(sweep, dict) or "grid" in sweep:
        return False
    grid = {key: value for key, value in sweep.items() if key not in Sweep.model_fields}
    if not grid:
        return False
    data["sweep"] = {**{key: value for key, value in sweep.items() if key in Sweep.model_fields}, "grid": grid}
    return True


def _load_sweep(model: JobFile, data: dict[str, Any], origins: Origins, as_written: Callable[[Invalid], Invalid],
                source: Path, *, short: bool) -> SweepSpec:
    """Every task of the sweep resolved as a job file of its own: the file with the task's
    overrides applied as `-o` overrides are, so that each is checked as a whole file would be
    (the entrypoint's signature included) and an error names the sweep's key and the task."""
    assert model.sweep is not None
    try:
        overrides = expand(model.sweep.grid, model.sweep.tasks, short=short)
        if not overrides:
            raise Invalid(("sweep",), "a sweep needs a grid or tasks: e.g. sweep: {args.lr: [0.1, 0.01]}")
    except Invalid as problem:
        raise origins.locate(problem) from None
    from_grid = len(overrides) - len(model.sweep.tasks)
    base = {key: value for key, value in data.items() if key != "sweep"}
    tasks: list[SweepTaskSpec] = []
    for index, task in enumerate(overrides):
        name = task_name(task)
        task_data, task_origins = copy.deepcopy(base), copy.deepcopy(origins)
        for key, value in task.items():
            written: KeyPath = (("sweep",) if short else ("sweep", "grid")) if index < from_grid else (
                "sweep", "tasks", index - from_grid)
            label = f"{origins.where((*written, key))}: sweep task {name}"
            set_value(task_data, task_origins, tuple(key.split(".")), value, label)
        task_model = _validate(task_data, task_origins, as_written)
        try:
            spec = _resolve(task_model, source, sweep_task=name)
            if index == 0:
                _check_sweep_settings(spec.options, len(overrides), model.sweep.max_parallel)
        except Invalid as problem:
            raise task_origins.locate(as_written(problem)) from None
        tasks.append(SweepTaskSpec(name=name, overrides=task, spec=spec))
    first = tasks[0].spec
    sweep_dir = Path(first.options.run_dir).parent
    resolved = {**model.model_dump(), "name": first.name, "run_dir": str(sweep_dir)}
    return SweepSpec(source=source, name=first.name, run_dir=sweep_dir, executor=first.options.executor,
                     max_parallel=model.sweep.max_parallel, tasks=tuple(tasks), resolved=resolved)


def _check_sweep_settings(options: JobOptions, tasks: int, max_parallel: int | None) -> None:
    """What the sweep asks of its executor (an array on SLURM, every task at once on this machine),
    and checkpoints that stay each task's own."""
    for index, rule in enumerate(rule_list(options.checkpoint)):
        if rule.dirpath is not None:
            raise Invalid(("checkpoint", index, "dirpath"), (
                "every task of the sweep would write its checkpoints into this one directory, and resume from "
                "the others'; leave dirpath out: each task keeps its own in <task run_dir>/checkpoints"))
    if options.executor == "debug":
        raise Invalid(("sweep",), (
            "the debug executor runs one job inside this process; a sweep runs on the local or slurm executor"))
    if options.executor != "local":
        return
    if max_parallel is not None and max_parallel < tasks:
        raise Invalid(("sweep", "max_parallel"), (
            f"the local executor starts all {tasks} tasks at once and cannot hold some back; max_parallel limits "
            "a SLURM array: remove it, or use executor slurm"))
    processes, cpus = tasks * options.tasks_per_node, _local_cpus()
    if processes > LOCAL_TASKS_PER_CPU * cpus:
        raise Invalid(("sweep",), (
            f"{tasks} tasks of {options.tasks_per_node} rank(s) are {processes} processes at once, more than the "
            f"local executor runs on this machine's {cpus} CPU(s): at most {LOCAL_TASKS_PER_CPU * cpus}"))


def _resolve(model: JobFile, source: Path, sweep_task: str | None = None) -> JobSpec:
    """`sweep_task`: the task's name; its run directory is then that name inside the file's
    run_dir, which is the sweep's."""
    function, decorated = import_entrypoint(model.entrypoint)
    check_args(function, model.args)
    name = model.name or function.__name__
    if not NAME.fullmatch(name):  # a lambda's "<lambda>", say: it would become the sbatch job name
        raise Invalid(("name",), f"the function's name {name!r} cannot name a job; set name")
    written = {field: _is_set(model, path) for field, path in _FIELDS.items()}
    settings: dict[str, Any] = {field: _option(model, field) for field in _FIELDS}
    if decorated is not None:  # the file overrides the decorator, field by field
        settings.update({field: getattr(decorated, field) for field in _FIELDS if not written[field]})
    _check_combinations(settings, written)
    run_dir = run_dir_for(settings["run_dir"], name)
    if sweep_task is not None:
        check_sweep_dir(run_dir)
        run_dir = run_dir / sweep_task
    check_run_dir(run_dir, settings["checkpoint"])
    _check_rules(settings["checkpoint"], run_dir)
    settings["run_dir"] = run_dir
    options = JobOptions(**settings)

    resolved = model.model_dump()
    for field, path in _FIELDS.items():
        if not written[field] and decorated is not None:
            _put(resolved, path, _as_file_value(field, getattr(decorated, field)))
    resolved.update(name=name, run_dir=str(run_dir))
    for rule in resolved["checkpoint"] or ():
        if rule["dirpath"] is not None:
            rule["dirpath"] = os.path.abspath(rule["dirpath"])
    return JobSpec(
        source=source, name=name, entrypoint=model.entrypoint, function=function,
        args=dict(model.args), options=options,
        fire_drill_step=None if model.fire_drill is None else model.fire_drill.preempt_at_step,
        resolved=resolved,
    )


@dataclass(frozen=True)
class SweepTaskSpec:
    """One task of a sweep: its name (its directory), what it overrides, and its job, resolved."""

    name: str
    overrides: dict[str, Any]  # "args.lr" -> 0.001
    spec: JobSpec  # options.run_dir: <sweep dir>/<name>


@dataclass(frozen=True)
class SweepSpec:
    """A job file with a sweep, resolved and checked: every task, ready for submission."""

    source: Path
    name: str
    run_dir: Path  # the sweep's directory, absolute; each task's is inside
    executor: str
    max_parallel: int | None  # sweep.max_parallel (SLURM's %N)
    tasks: tuple[SweepTaskSpec, ...]
    resolved: dict[str, Any]  # the file as submitted (overrides applied, its sweep included)


def _is_set(model: BaseModel, path: KeyPath) -> bool:
    """Whether the file (or an override) wrote the key at `path`, rather than left the default."""
    for part in path:
        if part not in model.model_fields_set:
            return False
        model = getattr(model, str(part))
    return True


def _option(model: JobFile, field: str) -> Any:
    """The JobOptions value of `field` as the file gives it (or its default)."""
    value: Any = model
    for part in _FIELDS[field]:
        value = getattr(value, str(part))
    if field == "timeout_min":
        return to_minutes(value)
    if field == "signal_delay_s":
        return to_seconds(value)
    if field == "checkpoint":
        return None if value is None else [_rule(index, entry) for index, entry in enumerate(value)]
    if field == "slurm_options":
        return dict(value)
    if field == "notify":
        return None if value is None else _notify(value)
    return value


def _notify(section: NotifySection) -> Notify:
    try:
        return Notify(command=section.command, webhook=section.webhook, on=section.on,
                      timeout_s=to_notify_seconds(section.timeout))
    except InvalidSetting as error:  # the one check across keys: a command, a webhook or both
        raise Invalid(_FIELDS["notify"], error.problem) from None


def _rule(index: int, entry: Checkpoint) -> ModelCheckpoint:
    """The ModelCheckpoint for one entry; its own checks report at the parameter they name."""
    try:
        return ModelCheckpoint(**entry.model_dump())
    except (ValueError, TypeError) as error:
        message = str(error)
        named = [(match.start(), name) for name in Checkpoint.model_fields
                 if (match := re.search(rf"\b{name}\b", message))]
        path: KeyPath = ("checkpoint", index, min(named)[1]) if named else ("checkpoint", index)
        raise Invalid(path, message) from None


def _check_rules(checkpoint: ModelCheckpoint | Sequence[ModelCheckpoint] | None, run_dir: Path) -> None:
    """Rules that could not share the run: see `check_rule_set`; and no dirpath in a system or
    shared directory."""
    rules = rule_list(checkpoint)
    for index, rule in enumerate(rules):
        if rule.dirpath is not None:
            check_not_shared(Path(rule.dirpath), ("checkpoint", index, "dirpath"))
    try:
        check_rule_set(rules, default_dirpath=checkpoints_dir(run_dir), emergency_dir=emergency_dir(run_dir))
    except RuleConflict as conflict:
        path: KeyPath = ("checkpoint", conflict.index)
        raise Invalid(path if conflict.parameter is None else (*path, conflict.parameter), conflict.problem) from None


def _local_cpus() -> int:
    """The CPUs this process may use (its affinity: a container's or a batch job's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_combinations(settings: dict[str, Any], written: dict[str, bool]) -> None:
    """Checks across sections, reported at the key the file wrote (the other may be a default)."""
    executor = settings["executor"]
    try:
        check_nodes(settings["nodes"], executor, settings["tasks_per_node"])
    except InvalidSetting as error:
        if written["nodes"]:
            path = _FIELDS["nodes"]
        else:  # the default node count: the other key the file wrote is at fault
            path = _FIELDS["executor"] if "executor" in error.problem else _FIELDS["tasks_per_node"]
        raise Invalid(path, error.problem) from None
    tasks, cpus = settings["tasks_per_node"], _local_cpus()
    if executor == "local" and tasks > LOCAL_TASKS_PER_CPU * cpus:
        path = _FIELDS["tasks_per_node"] if written["tasks_per_node"] else _FIELDS["executor"]
        raise Invalid(path, (
            f"{tasks} tasks are more than the local executor runs on this machine's {cpus} CPU(s): "
            f"at most {LOCAL_TASKS_PER_CPU * cpus}, {LOCAL_TASKS_PER_CPU} per CPU"))
    delay, minutes = settings["signal_delay_s"], settings["timeout_min"]
    if delay >= minutes * 60:
        only_time = written["timeout_min"] and not written["signal_delay_s"]
        path = _FIELDS["timeout_min"] if only_time else _FIELDS["signal_delay_s"]
        raise Invalid(path, (
            f"slurm.signal_delay ({delay} s) must be shorter than resources.time ({minutes} min), "
            "or the warning signal would come before the job could do any work"))


def _as_file_value(field: str, value: Any) -> Any:
    """A decorator's JobOptions value written as the job file would write it."""
    if field == "checkpoint" and value is not None:
        rules = [value] if isinstance(value, ModelCheckpoint) else list(value)
        return [_rule_settings(rule) for rule in rules]
    if field == "slurm_options":
        return dict(value)
    if field == "notify" and value is not None:
        return {"command": None if value.command is None else list(value.command), "webhook": value.webhook,
                "on": [str(state) for state in NOTIFY_STATES if state in value.on], "timeout": value.timeout_s}
    return value


def _rule_settings(rule: ModelCheckpoint) -> dict[str, Any]:
    """A ModelCheckpoint's parameters, which it keeps under their own names."""
    settings = {name: getattr(rule, name) for name in Checkpoint.model_fields}
    interval: timedelta | None = settings["train_time_interval"]
    if interval is not None:
        settings["train_time_interval"] = f"{interval.total_seconds():.6f}".rstrip("0").rstrip(".") + "s"
    return settings


def _put(tree: dict[str, Any], path: KeyPath, value: Any) -> None:
    for part in path[:-1]:
        tree = tree[str(part)]
    tree[str(path[-1])] = value
