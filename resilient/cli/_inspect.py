"""`resilient status [RUN]` and `resilient logs RUN`: what a job is doing, and what it printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..requeue._status import RUNNING, read_status
from ..rundir._events import read_events
from ..rundir._lock import lock_holder
from ..rundir._record import read_record
from ..submission import JobHandle
from ..submission._handle import LOST
from ._common import EXIT_OK, RUNS_DIR, UsageError, attach, checkpoint_name, describe, find_run, table, when
from ._follow import follow

_HEADERS = ("RUN", "JOB", "EXECUTOR", "STATE", "RESTARTS", "LAST CHECKPOINT", "LAST EVENT")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser(
        "status", help="state, restarts, last checkpoint and last event of runs",
        description="Show runs as a table: every run under ./runs, or the one RUN names.",
        epilog="examples:\n  resilient status\n  resilient status runs/quickstart",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("run", nargs="?", metavar="RUN", help="a run directory, or a run's name under ./runs")
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


def _row(run_dir: Path) -> tuple[list[str], str]:
    """The run's table row, and its status message."""
    record = read_record(run_dir)
    status = read_status(run_dir)
    if record is not None:
        state = JobHandle(run_dir, record).state
    else:  # a plain process: it runs while it holds the run directory's lock
        state = LOST if status.state == RUNNING and lock_holder(run_dir) is None else status.state
    history = read_events(run_dir)
    checkpoints = [event for event in history if event.get("event") == "checkpoint"]
    last_checkpoint: dict[str, Any] | None = checkpoints[-1] if checkpoints else None
    last = history[-1] if history else None
    row = [
        str(run_dir.relative_to(Path.cwd())) if run_dir.is_relative_to(Path.cwd()) else str(run_dir),
        record.job_id if record else (status.job_id or "-"),
        record.executor if record else "-",
        state,
        _restarts(status.requeues),
        f"{when(last_checkpoint['time'])} step {last_checkpoint['step']} {checkpoint_name(last_checkpoint['path'])}"
        if last_checkpoint else "-",
        f"{when(last['time'])} {describe(last)}" if last else "-",
    ]
    return row, status.message


def _status(args: argparse.Namespace) -> int:
    if args.run is not None:
        runs = [find_run(args.run)]
    else:
        runs = sorted(path.absolute() for path in RUNS_DIR.glob("*")
                      if (path / "job.json").is_file() or (path / "status.json").is_file())
        if not runs:
            raise UsageError(f"no runs under ./{RUNS_DIR}; name one: resilient status RUN")
    rows, messages = zip(*(_row(run_dir) for run_dir in runs))
    print(table(_HEADERS, rows))
    if args.run is not None and messages[0]:
        print(f"\n{messages[0]}")
    return EXIT_OK


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
