"""`resilient status [RUN]` and `resilient logs RUN`: what a job is doing, and what it printed."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..rundir import (
    DamagedFile,
    Event,
    Goodput,
    JobRecord,
    State,
    Status,
    goodput,
    is_run_dir,
    is_sweep_dir,
    lock_holder,
    read_heartbeat,
    read_history,
    read_record,
    read_status,
    read_sweep,
)
from ..submission import LOST, JobHandle
from ._common import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    RUNS_DIR,
    TABLE_WIDTH,
    UsageError,
    attach,
    checkpoint_name,
    describe,
    find_run_or_sweep,
    table,
    when,
)
from ._follow import follow

T = TypeVar("T")
_HEADERS = ("RUN", "JOB", "EXECUTOR", "STATE", "RESTARTS", "GOODPUT", "LAST CHECKPOINT", "LAST EVENT")
_RUN, _STATE, _LAST_CHECKPOINT, _LAST_EVENT = 0, 3, 6, 7
# When a row would not fit: the run's path gives way first (its end names the run), then the
# last checkpoint (its time and step stay), then the last event, then all of them down to the headers.
_NARROWING = ((_RUN, 20), (_LAST_CHECKPOINT, 24), (_LAST_EVENT, 0), (_RUN, 0), (_LAST_CHECKPOINT, 0))
DAMAGED = "damaged"  # the state of a run with a file that cannot be read
_LIVE = ("pending", State.RUNNING, State.REQUEUED)  # states of a job still to come back or going on


def add_parsers(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser(
        "status", help="state, restarts, last checkpoint and last event of runs",
        description="Show runs as a table: every run under ./runs, or the one RUN names. A sweep shows one row "
                    "per task and a line counting its tasks by state. A run whose files "
                    "cannot be read shows as damaged, naming the file and why, and the exit code is then 1.",
        epilog="examples:\n  resilient status\n  resilient status runs/quickstart",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("run", nargs="?", metavar="RUN", help="a run or sweep directory, or its name under ./runs")
    status.set_defaults(handler=_status)

    logs = commands.add_parser(
        "logs", help="print (or follow) a rank's output",
        description="Print the stdout and stderr of one rank of the job last submitted in RUN.",
        epilog="examples:\n  resilient logs quickstart\n  resilient logs runs/ddp -f --rank 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs.add_argument("run", metavar="RUN", help="a run directory, or a run's name under ./runs")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--rank", type=int, default=0, metavar="N", help="the rank whose output to show (default 0)")
    logs.set_defaults(handler=_logs)


def _restarts(requeues: dict[str, int]) -> str:
    total = sum(requeues.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{cause} {count}" for cause, count in sorted(requeues.items())) + ")"


def run_state(run_dir: Path, record: JobRecord | None, status: Status) -> str:
    """What the run is doing: its job's state as the scheduler tells it, or a plain process's by its lock."""
    if record is not None:
        return JobHandle(run_dir, record).state
    # a plain process: it runs while it holds the run directory's lock
    return LOST if status.state == State.RUNNING and lock_holder(run_dir) is None else status.state


def run_goodput(run_dir: Path, events: list[dict[str, Any]], state: str) -> Goodput:
    """The run's goodput as of now; a run in a live `state` is still spending wall time."""
    return goodput(events, now=time.time(), live=state in _LIVE, heartbeat=read_heartbeat(run_dir))


def percent(result: Goodput) -> str:
    return "-" if result.percent is None else f"{result.percent:.1f}%"


def _readable(read: Callable[[Path], T], run_dir: Path, damage: list[DamagedFile]) -> T | None:
    """What `read` finds in the run directory; None, and the damage noted, where it cannot."""
    try:
        return read(run_dir)
    except DamagedFile as error:
        damage.append(error)
        return None


def _starts(world_sizes: list[int]) -> str:
    """The world size of each start, for a run whose job comes back on whatever nodes it gets."""
    return "world size at each start: " + ", ".join(map(str, world_sizes)) if world_sizes else ""


def _row(run_dir: Path) -> tuple[list[str], list[str], list[DamagedFile]]:
    """The run's table row, what the detailed view adds (its status message, the world size of
    each start), and what in it is damaged.

    Each file is read on its own, so that a damaged one still leaves the others to be shown.
    """
    damage: list[DamagedFile] = []
    record = _readable(read_record, run_dir, damage)
    status = _readable(read_status, run_dir, damage)
    history = read_history(run_dir)
    damage += [history.damage] if history.damage else []
    checkpoints = [event for event in history.events if event["event"] == Event.CHECKPOINT]
    last_checkpoint = checkpoints[-1] if checkpoints else None
    last = history.events[-1] if history.events else None
    if damage:
        state, last_event, shown = DAMAGED, f"{damage[0].path.name}: {damage[0].why}", "-"
    else:
        assert status is not None
        state = run_state(run_dir, record, status)
        last_event = f"{when(last['time'])} {describe(last, run_dir)}" if last else "-"
        shown = percent(run_goodput(run_dir, history.events, state))
    row = [
        _shown_path(run_dir),
        record.job_id if record else (status.job_id if status else None) or "-",
        record.executor if record else "-",
        state,
        _restarts(status.requeues) if status else "-",
        shown,
        f"{when(last_checkpoint['time'])} step {last_checkpoint.get('step')} "
        f"{checkpoint_name(str(last_checkpoint.get('path')))}" if last_checkpoint else "-",
        last_event,
    ]
    return row, [status.message, _starts(status.world_sizes)] if status else [], damage


def _shown_path(path: Path) -> str:
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


NOT_SUBMITTED = "not submitted"  # a task in the sweep's table whose job was never submitted


def _sweep_rows(sweep_dir: Path, name_of: Callable[[Path], str]) -> tuple[list[list[str]], str, list[DamagedFile]]:
    """A row per task of the sweep (RUN as `name_of` says), a summary line, and the damage found."""
    try:
        sweep = read_sweep(sweep_dir)
    except DamagedFile as damage:
        row = [_shown_path(sweep_dir), "-", "-", DAMAGED, "-", "-", "-", f"{damage.path.name}: {damage.why}"]
        return [row], "", [damage]
    assert sweep is not None
    rows, damage, states = [], [], Counter()
    for task in sweep.tasks:
        if is_run_dir(task.run_dir):
            row, _, task_damage = _row(task.run_dir)
        else:
            row, task_damage = ["", "-", sweep.executor, NOT_SUBMITTED, "-", "-", "-", "-"], []
        row[_RUN] = name_of(task.run_dir)
        rows.append(row)
        damage += task_damage
        states[row[_STATE]] += 1
    counts = ", ".join(f"{count} {state}" for state, count in states.most_common())
    tasks = f"{len(sweep.tasks)} task" + ("" if len(sweep.tasks) == 1 else "s")
    return rows, f"sweep {_shown_path(sweep_dir)}: {tasks}: {counts}", damage


def _status(args: argparse.Namespace) -> int:
    if args.run is not None:
        target = find_run_or_sweep(args.run)
        if is_sweep_dir(target) and not is_run_dir(target):
            rows, summary, damage = _sweep_rows(target, lambda task: task.name)
            print(table(("TASK", *_HEADERS[1:]), rows, width=TABLE_WIDTH, narrowing=_NARROWING))
            print("\n".join(["", summary] if summary else []) + "".join(f"\n{each}" for each in damage))
            return EXIT_JOB_FAILED if damage else EXIT_OK
        runs = [target]
    else:
        runs = sorted(path.absolute() for path in RUNS_DIR.glob("*") if is_run_dir(path) or is_sweep_dir(path))
        if not runs:
            raise UsageError(f"no runs under ./{RUNS_DIR}; name one: resilient status RUN")
    rows, details, damage, summaries = [], [], [], []
    for path in runs:
        if is_run_dir(path):
            row, detail, run_damage = _row(path)
            rows.append(row)
            details.append(detail)
            damage += run_damage
        else:  # a sweep: its tasks, one under the other
            task_rows, summary, sweep_damage = _sweep_rows(path, _shown_path)
            rows += task_rows
            summaries += [summary] if summary else []
            damage += sweep_damage
    print(table(_HEADERS, rows, width=TABLE_WIDTH, narrowing=_NARROWING, keep_end=(_RUN,)))
    if args.run is not None:
        shown = [detail for detail in (*details[0], *map(str, damage)) if detail]
        if shown:
            print("\n" + "\n".join(shown))
    elif summaries:
        print("\n" + "\n".join(summaries))
    return EXIT_JOB_FAILED if damage else EXIT_OK


def _logs(args: argparse.Namespace) -> int:
    handle = attach(args.run)
    if not 0 <= args.rank < handle.record.tasks:
        raise UsageError(f"--rank {args.rank}: job {handle.job_id} has ranks 0 to {handle.record.tasks - 1}")
    if args.follow:
        follow(handle, args.rank, events=False)
        return EXIT_OK
    sys.stdout.write(handle.stdout(args.rank))
    sys.stderr.write(handle.stderr(args.rank))
    return EXIT_OK
