"""`resilient cancel RUN` and `resilient preempt RUN`: stopping a job for good, or for a drill.

RUN may be a sweep's directory: then every task of it that is still alive.
"""

from __future__ import annotations

import argparse

from ..rundir import is_run_dir, is_sweep_dir, read_sweep
from ..submission import JobHandle
from ._common import EXIT_OK, UsageError, attach, find_run_or_sweep, say


def add_parsers(commands: argparse._SubParsersAction) -> None:
    cancel = commands.add_parser(
        "cancel", help="stop a job for good (after an emergency checkpoint)",
        description="Cancel the job last submitted in RUN: it checkpoints at its next step boundary and "
                    "ends as cancelled, without requeueing. Submitting its file again resumes it. On a sweep's "
                    "directory: every task still alive.",
        epilog="example:\n  resilient cancel runs/quickstart", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cancel.add_argument("run", metavar="RUN", help="a run or sweep directory, or its name under ./runs")
    cancel.set_defaults(handler=_cancel)

    preempt = commands.add_parser(
        "preempt", help="fire drill: send the preemption warning signal to a running job",
        description="Send the job's warning signal, as the cluster does before a preemption: the job "
                    "checkpoints at the next step boundary, requeues itself and resumes. On a sweep's "
                    "directory: every task still running.",
        epilog="examples:\n  resilient preempt runs/quickstart\n  resilient preempt runs/ddp --rank 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preempt.add_argument("run", metavar="RUN", help="a run or sweep directory, or its name under ./runs")
    preempt.add_argument("--rank", type=int, metavar="N",
                         help="local executor: signal only this rank (default: all; SLURM signals every task)")
    preempt.set_defaults(handler=_preempt)


def _live_handles(run: str) -> list[JobHandle]:
    """The live job of RUN, or every live task of a sweep; UsageError if none runs."""
    target = find_run_or_sweep(run)
    sweep = read_sweep(target) if is_sweep_dir(target) and not is_run_dir(target) else None
    if sweep is None:
        handle = attach(run)
        if handle.done():
            raise UsageError(f"job {handle.job_id} in {handle.run_dir} is not running (it is {handle.state})")
        return [handle]
    handles = [JobHandle.attach(task.run_dir) for task in sweep.tasks if is_run_dir(task.run_dir)]
    live = [handle for handle in handles if not handle.done()]
    if not live:
        raise UsageError(f"no task of the sweep in {target} is running")
    return live


def _cancel(args: argparse.Namespace) -> int:
    for handle in _live_handles(args.run):
        try:
            waiting = handle.cancel()
        except ValueError as error:
            raise UsageError(str(error)) from None
        if waiting:
            say(f"cancelled job {handle.job_id}: it was waiting to start, so nothing ran; its checkpoints stay")
        else:
            say(f"cancelling job {handle.job_id}: it checkpoints, then stops")
    return EXIT_OK


def _preempt(args: argparse.Namespace) -> int:
    for handle in _live_handles(args.run):
        try:
            handle.preempt(args.rank)
        except ValueError as error:
            raise UsageError(str(error)) from None
        say(f"sent job {handle.job_id} its preemption signal: it checkpoints, requeues and resumes")
    return EXIT_OK
