"""What every command shares: exit codes, the user-mistake error, finding a run, printing tables."""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..rundir import (
    RECORD_FILE,
    STATUS_FILE,
    SWEEP_FILE,
    Event,
    is_emergency,
    is_run_dir,
    is_sweep_dir,
    read_sweep,
    shorten,
)
from ..settings import RUNS_DIR
from ..submission import JobHandle

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job, a checkpoint or a file of the run directory is not what it should be
EXIT_USAGE = 2  # the command line or the job file is wrong: nothing was done

TABLE_WIDTH = 119  # a status row fits a 120-column terminal


class UsageError(Exception):
    """A mistake on the command line; its message is printed as one line, with exit code 2."""


def find_run_or_sweep(name: str) -> Path:
    """RUN as given on the command line: a run or sweep directory, or the name of one under ./runs."""
    candidates = [Path(name)] if Path(name).is_absolute() else [Path(name), RUNS_DIR / name]
    for candidate in candidates:
        if is_run_dir(candidate) or is_sweep_dir(candidate):
            return candidate.absolute()
    looked = " and ".join(str(path) if path.is_absolute() else f"./{path}" for path in candidates)
    raise UsageError(
        f"no run directory {name!r} (looked for {RECORD_FILE}, {STATUS_FILE} or {SWEEP_FILE} in {looked})")


def find_run(name: str) -> Path:
    """RUN as given on the command line: a run directory (a sweep's task too), or the name of one under ./runs."""
    path = find_run_or_sweep(name)
    if not is_run_dir(path):
        sweep = read_sweep(path)
        example = sweep.tasks[0].run_dir if sweep is not None else path
        raise UsageError(f"{name} is a sweep; name one of its tasks, e.g. {example}")
    return path


def attach(run: str) -> JobHandle:
    """The handle of the job last submitted in RUN."""
    try:
        return JobHandle.attach(find_run(run))
    except ValueError as error:
        raise UsageError(str(error)) from None


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None = None,
          narrowing: Sequence[tuple[int, int]] = (), keep_end: Collection[int] = ()) -> str:
    """Left-aligned columns, two spaces apart, as `squeue` prints them.

    With `width`, the columns of `narrowing` give way in turn, each down to its floor (never
    below its header), until a row fits: a table wider than the terminal wraps into something
    unreadable. Cut cells end in an ellipsis; those of `keep_end` columns (paths) start with one.
    """
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for column, floor in narrowing:
        excess = sum(widths) + 2 * (len(widths) - 1) - (width or 0)
        widths[column] -= max(min(excess, widths[column] - max(floor, len(headers[column]))), 0)
    lines = ["  ".join(shorten(str(cell), widths[column], keep_end=column in keep_end).ljust(widths[column])
                       for column, cell in enumerate(row)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def when(iso_time: str | None) -> str:
    """An event's time as people read it: the time today, else the date too."""
    if not iso_time:
        return "-"
    moment = datetime.fromisoformat(iso_time)
    same_day = moment.date() == datetime.now(moment.tzinfo).date()
    return moment.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M")


def size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB"):
        if num_bytes < 1000:
            return f"{num_bytes:.0f} B" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.1f} GB"


def ranks(count: int) -> str:
    """"1 rank", "2 ranks": how many processes a start of the job had."""
    return f"{count} rank" + ("" if count == 1 else "s")


def checkpoint_name(path: str) -> str:
    """A checkpoint path as short as still tells rule and emergency checkpoints apart."""
    checkpoint = Path(path)
    return f"{checkpoint.parent.name}/{checkpoint.name}" if is_emergency(checkpoint) else checkpoint.name


def ended(state: str, message: str) -> str:
    """A final state and the status message that explains it, without saying the state twice."""
    return f"{state}: {message.removeprefix(f'{state}: ')}" if message else state


def describe(event: dict[str, Any], run_dir: Path | None = None) -> str:
    """One event as a short phrase, for `status` and `--follow`; paths in `run_dir` are named from there."""
    kind = event.get("event", "?")
    if kind == Event.SUBMITTED:
        return f"submitted job {event.get('job_id')} ({event.get('executor')})"
    if kind == Event.STARTED:
        restarts, world_size = event.get("restarts") or 0, event.get("world_size")
        return (f"started job {event.get('job_id')}" + (f" on {ranks(world_size)}" if world_size else "")
                + (f" (restart {restarts})" if restarts else ""))
    if kind == Event.RESUMED:
        return f"resumed at step {event.get('step')} from {checkpoint_name(str(event.get('checkpoint')))}"
    if kind == Event.CHECKPOINT:
        return (f"checkpoint at step {event.get('step')}: {checkpoint_name(str(event.get('path')))}, "
                f"{size(event.get('bytes') or 0)}" + (f" in {event['seconds']} s" if event.get("seconds") is not None else ""))
    if kind == Event.SIGNAL:
        return f"stop agreed at step {event.get('step')}: {', '.join(event.get('reasons') or [])}"
    if kind == Event.FIRE_DRILL:
        return "fire drill: preemption signal sent" + (f" at step {event['step']}" if "step" in event else "")
    if kind == Event.CHECKPOINT_FAILED:
        return f"checkpoint at step {event.get('step')} failed: {event.get('error')}"
    if kind == Event.FINISHED:
        return f"finished at step {event['step']}" if "step" in event else "finished: it had already completed"
    if kind == Event.NOTIFY_FAILED:
        via = f" by {event['via']}" if event.get("via") else ""
        return f"notification of {event.get('state')}{via} failed: {event.get('error')}"
    if kind == Event.FIRST_STEP:
        return f"first step done: step {event.get('step')}"
    if kind == Event.CANCEL_REQUESTED:
        return "cancel requested"
    if kind == Event.REQUEUED:
        cause = event.get("cause", "?")
        return f"requeued ({cause} #{(event.get('requeues') or {}).get(cause, '?')})"
    message = event.get("message", "")
    if run_dir is not None:
        message = message.replace(f"{run_dir}{os.sep}", "")
    return message if message.startswith(f"{kind}:") else f"{kind.replace('_', ' ')}: {message}".rstrip(": ")


def say(message: str) -> None:
    """A line about what resilient did, on stderr, apart from the output a script would parse."""
    print(f"resilient: {message}", file=sys.stderr, flush=True)
