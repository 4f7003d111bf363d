"""Deciding, once per start and once per end, what the run's state is and whether it comes back.

Rank 0 alone calls `begin`, `finish` and `after_interrupt`: the others follow the decision it
broadcasts. `after_abort` and `after_crash` are called by every rank that ends that way, since
a rank stopped on the spot or crashed cannot wait for the others; the status file's lock keeps
each update whole. Each decision is written to the status file before the requeue is requested,
because SLURM kills the job the moment `scontrol requeue` succeeds. The notification of an end
(`Notify`, rank 0's only) follows its event and also comes before that request (`_notify.py`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..rundir import Beat, Event, State, Status, append_event, read_status, update_status
from ..slurm import SlurmCommandError
from ._cause import Cause
from ._host import EXIT_CTRL_C, EXIT_STOPPED, Host
from ._notify import Notify
from ._policy import RequeuePolicy, SetupRefused

EXIT_FAILED = 1
_INFRASTRUCTURE = (Cause.PREEMPTED, Cause.TIME_LIMIT)  # counted together against max_requeues


@dataclass(frozen=True)
class Outcome:
    """How every rank leaves: exit code, final or intermediate state, and a line for the log."""

    exit_code: int
    state: State
    message: str


# The event that records each state a run can end a start in.
_EVENT_OF_STATE = {
    State.COMPLETED: Event.FINISHED,
    State.REQUEUED: Event.REQUEUED,
    State.FAILED: Event.FAILED,
    State.GAVE_UP: Event.GAVE_UP,
    State.CANCELLED: Event.CANCELLED,
    State.STOPPED: Event.STOPPED,
}


def _record_end(run_dir: Path, host: Host, record: Status, step: int | None, notify: Notify | None,
                **fields: object) -> None:
    """The event for the state just written, then its notification: before any requeue request,
    which kills the job. `step`: the steps finished when the start ended (None: unknown, or
    nothing was done)."""
    event = _EVENT_OF_STATE[record.state]
    append_event(run_dir, event, job_id=host.job_id, message=record.message, requeues=dict(record.requeues),
                 **fields, **({} if step is None else {"step": step}))
    if notify is not None:
        notify.send(run_dir, host, record.state, event, record.message, step=step)


def begin(run_dir: Path, host: Host, world_size: int, previous: Beat | None = None) -> Outcome | None:
    """Mark the run as running on `world_size` ranks; an Outcome means it must not run (it gave
    up before a requeue).

    Each start's world size is kept: a job with a node range comes back on whatever nodes it gets.
    A previous start still `running` never recorded its end (a SIGKILL): `previous`, what its
    heartbeat said, is recorded for it as a `lost` event (the step it got to).
    """
    with update_status(run_dir) as record:
        if record.state == State.RUNNING and previous is not None:
            fields = {} if previous.step is None else {"step": previous.step}
            append_event(run_dir, Event.LOST, job_id=record.job_id, **fields,
                         message="the previous start ended without recording how (killed?)"
                                 + ("" if previous.step is None else f" after step {previous.step}"))
        if host.job_id is None or record.job_id != host.job_id:
            record.job_id, record.requeues = host.job_id, {}  # a new submission counts afresh
            record.cancel_requested, record.world_sizes = False, []
        elif record.state == State.GAVE_UP:
            return Outcome(EXIT_FAILED, State.GAVE_UP, record.message)
        record.state, record.message = State.RUNNING, ""
        record.world_sizes.append(world_size)
        restarts = sum(record.requeues.values())
    append_event(run_dir, Event.STARTED, job_id=host.job_id, host=host.kind, restarts=restarts, world_size=world_size)
    return None


def finish(run_dir: Path, host: Host, step: int | None, notify: Notify | None = None) -> None:
    """Completed; `step` None when a completed run was called again and did nothing (no news to notify)."""
    with update_status(run_dir) as record:
        record.state, record.message = State.COMPLETED, ""
    _record_end(run_dir, host, record, step, None if step is None else notify)


def _requeue_or_give_up(run_dir: Path, host: Host, policy: RequeuePolicy, cause: Cause, detail: str,
                        step: int | None, notify: Notify | None) -> Outcome:
    with update_status(run_dir) as record:
        done = record.count(cause) if cause == Cause.CRASHED else record.count(*_INFRASTRUCTURE)
        allowed = policy.allows(cause, done)
        if allowed:
            record.requeues[cause] = record.requeues.get(cause, 0) + 1
            record.state, record.message = State.REQUEUED, f"{detail}; requeued ({cause} #{record.requeues[cause]})"
        else:
            bound = "max_crash_requeues" if cause == Cause.CRASHED else "max_requeues"
            record.state = State.FAILED if cause == Cause.CRASHED else State.GAVE_UP
            record.message = f"{detail}; gave up after {done} requeue(s) ({bound}={getattr(policy, bound)})"
        outcome = Outcome(EXIT_FAILED, record.state, record.message)
    _record_end(run_dir, host, record, step, notify, cause=cause)
    if not allowed:
        return outcome
    try:
        return Outcome(host.requeue(cause), State.REQUEUED, outcome.message)
    except SlurmCommandError as error:
        with update_status(run_dir) as record:
            record.state, record.message = State.FAILED, f"{detail}; {error}"
        _record_end(run_dir, host, record, step, notify, cause=cause)
        return Outcome(EXIT_FAILED, State.FAILED, record.message)


def _end(run_dir: Path, host: Host, state: State, detail: str, *, exit_code: int, cause: Cause,
         step: int | None, notify: Notify | None) -> Outcome:
    with update_status(run_dir) as record:
        record.state, record.message = state, detail
    _record_end(run_dir, host, record, step, notify, cause=cause)
    return Outcome(exit_code, state, detail)


def after_interrupt(run_dir: Path, host: Host, policy: RequeuePolicy, cause: Cause, checkpoint: str, *,
                    step: int | None = None, notify: Notify | None = None) -> Outcome:
    """The emergency checkpoint (of `step`) is committed; stop for good, or come back."""
    if read_status(run_dir).cancel_requested:
        cause = Cause.CANCELLED  # `resilient cancel` of a local job: its SIGTERM alone reads as a preemption
    detail = f"{cause}: emergency checkpoint {checkpoint}"
    if cause == Cause.CTRL_C:
        return _end(run_dir, host, State.STOPPED, f"{detail}; run it again to resume", exit_code=EXIT_CTRL_C,
                    cause=cause, step=step, notify=notify)
    if cause == Cause.CANCELLED:
        return _end(run_dir, host, State.CANCELLED, detail, exit_code=0, cause=cause, step=step, notify=notify)
    if not host.can_requeue:
        return _end(run_dir, host, State.STOPPED, detail, exit_code=EXIT_STOPPED, cause=cause, step=step, notify=notify)
    return _requeue_or_give_up(run_dir, host, policy, cause, detail, step, notify)


def after_abort(run_dir: Path, host: Host, detail: str, *, step: int | None = None,
                notify: Notify | None = None) -> Outcome:
    """A second Ctrl-C ended the run on the spot, without a checkpoint: stopped, never requeued."""
    return _end(run_dir, host, State.STOPPED, detail, exit_code=EXIT_CTRL_C, cause=Cause.CTRL_C, step=step,
                notify=notify)


def after_crash(run_dir: Path, host: Host, policy: RequeuePolicy, error: BaseException, *,
                step: int | None = None, notify: Notify | None = None) -> Outcome | None:
    """An exception ended the training code after `step` steps: requeue if the crash bound allows, else
    None (fail).

    A refused setup (`SetupRefused`) fails whatever the bound: it would be refused again.
    """
    if isinstance(error, SetupRefused):
        _end(run_dir, host, State.FAILED, f"refused: {error}; not requeued (a new start would be refused again)",
             exit_code=EXIT_FAILED, cause=Cause.CRASHED, step=step, notify=notify)
        return None
    detail = f"crashed: {type(error).__name__}: {error}"
    if host.can_requeue and policy.max_crash_requeues > 0:
        outcome = _requeue_or_give_up(run_dir, host, policy, Cause.CRASHED, detail, step, notify)
        if outcome.state == State.REQUEUED:
            return outcome
        return None
    _end(run_dir, host, State.FAILED, detail, exit_code=EXIT_FAILED, cause=Cause.CRASHED, step=step,
         notify=notify)
    return None


def announce(outcome: Outcome) -> None:
    print(f"resilient: {outcome.state}: {outcome.message}", file=sys.stderr, flush=True)

