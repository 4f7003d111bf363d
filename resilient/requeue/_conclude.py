"""Deciding, once per start and once per end, what the run's state is and whether it comes back.

Only rank 0 calls these (the others follow its decision), and each decision is written to the
status file before the requeue is requested, because SLURM kills the job the moment
`scontrol requeue` succeeds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..slurm._scontrol import SlurmCommandError
from . import _status as status
from ._host import CANCELLED, CRASHED, EXIT_STOPPED, PREEMPTED, TIME_LIMIT, Host
from ._policy import RequeuePolicy

EXIT_FAILED = 1
_INFRASTRUCTURE = (PREEMPTED, TIME_LIMIT)  # counted together against max_requeues


@dataclass(frozen=True)
class Outcome:
    """How every rank leaves: exit code, final or intermediate state, and a line for the log."""

    exit_code: int
    state: str
    message: str


def begin(run_dir: Path, host: Host) -> Outcome | None:
    """Mark the run as running; an Outcome means it must not run (it gave up before a requeue)."""
    with status.update_status(run_dir) as record:
        if host.job_id is None or record.job_id != host.job_id:
            record.job_id, record.requeues = host.job_id, {}  # a new submission counts afresh
        elif record.state == status.GAVE_UP:
            return Outcome(EXIT_FAILED, status.GAVE_UP, record.message)
        record.state, record.message = status.RUNNING, ""
    return None


def finish(run_dir: Path) -> None:
    with status.update_status(run_dir) as record:
        record.state, record.message = status.COMPLETED, ""


def _requeue_or_give_up(run_dir: Path, host: Host, policy: RequeuePolicy, cause: str, detail: str) -> Outcome:
    with status.update_status(run_dir) as record:
        done = record.count(cause) if cause == CRASHED else record.count(*_INFRASTRUCTURE)
        allowed = policy.allows(cause, done)
        if allowed:
            record.requeues[cause] = record.requeues.get(cause, 0) + 1
            record.state, record.message = status.REQUEUED, f"{detail}; requeued ({cause} #{record.requeues[cause]})"
        else:
            bound = "max_crash_requeues" if cause == CRASHED else "max_requeues"
            record.state = status.FAILED if cause == CRASHED else status.GAVE_UP
            record.message = f"{detail}; gave up after {done} requeue(s) ({bound}={getattr(policy, bound)})"
        outcome = Outcome(EXIT_FAILED, record.state, record.message)
    if not allowed:
        return outcome
    try:
        return Outcome(host.requeue(cause), status.REQUEUED, outcome.message)
    except SlurmCommandError as error:
        with status.update_status(run_dir) as record:
            record.state, record.message = status.FAILED, f"{detail}; {error}"
        return Outcome(EXIT_FAILED, status.FAILED, record.message)


def after_interrupt(run_dir: Path, host: Host, policy: RequeuePolicy, cause: str, checkpoint: str) -> Outcome:
    """The emergency checkpoint is committed; stop for good, or come back."""
    detail = f"{cause}: emergency checkpoint {checkpoint}"
    if cause == CANCELLED or not host.can_requeue:
        state = status.CANCELLED if cause == CANCELLED else status.STOPPED
        with status.update_status(run_dir) as record:
            record.state, record.message = state, detail
        return Outcome(0 if cause == CANCELLED else EXIT_STOPPED, state, detail)
    return _requeue_or_give_up(run_dir, host, policy, cause, detail)


def after_crash(run_dir: Path, host: Host, policy: RequeuePolicy, error: BaseException) -> Outcome | None:
    """An exception ended the training code: requeue if the crash bound allows, else None (fail)."""
    detail = f"crashed: {type(error).__name__}: {error}"
    if host.can_requeue and policy.max_crash_requeues > 0:
        outcome = _requeue_or_give_up(run_dir, host, policy, CRASHED, detail)
        if outcome.state == status.REQUEUED:
            return outcome
        return None
    with status.update_status(run_dir) as record:
        record.state, record.message = status.FAILED, detail
    return None


def announce(outcome: Outcome) -> None:
    print(f"resilient: {outcome.state}: {outcome.message}", file=sys.stderr, flush=True)

