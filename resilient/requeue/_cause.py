"""Why a run stopped, and how each scheduler's answer tells the causes apart.

The causes are what status.json counts requeues by and what users read, so their values never
change. Telling them apart is a pure function of what a host saw (the job's record, the signals
received, whether the deadline was hit, the time), which lets every cause be tested from recorded
`scontrol show job` output; the hosts in `_host.py` gather those inputs.
"""

from __future__ import annotations

from collections.abc import Collection

from ..rundir import Vocabulary
from ..slurm import JobInfo


class Cause(Vocabulary):
    """Why a run stopped, as recorded in status.json and events.jsonl and shown to users."""

    PREEMPTED = "preempted"
    TIME_LIMIT = "time_limit"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # a plain process got a stop signal
    CTRL_C = "ctrl_c"  # SIGINT: the user stops the run where it stands; it never requeues
    CRASHED = "crashed"


_TIME_SLACK_S = 5.0
_UNKNOWN_WARNING_WINDOW_S = 300.0
_EARLY_WARNING_S = 60.0  # SLURM checks limits in a ~30 s loop: warnings come up to that much early


def classify_slurm(job: JobInfo, received: Collection[int], warning_signal: int, deadline_hit: bool, *,
                   now: float, signal_delay_s: float | None) -> Cause:
    """Read the cause from the job's record, as observed on a real cluster (slurm/README.md).

    A preemption sets PreemptTime while the job still runs; the time limit shows as
    Reason=TimeLimit (or the clock is past StartTime + TimeLimit); a user's scancel turns the
    job COMPLETING with none of these; the warning signal close to the limit is the time-limit
    warning, and anywhere else a fire drill, which is treated as a preemption. `signal_delay_s`
    is how long before the limit the warning was asked for (None: not known).
    """
    start, limit = job.start_time, job.time_limit_s
    natural_end = start + limit if start is not None and limit is not None else None
    if job.preempted:
        return Cause.PREEMPTED
    if deadline_hit or job.reason == "TimeLimit" or (natural_end is not None and now >= natural_end - _TIME_SLACK_S):
        return Cause.TIME_LIMIT
    if job.state in ("COMPLETING", "CANCELLED"):
        return Cause.CANCELLED
    window = signal_delay_s if signal_delay_s is not None else _UNKNOWN_WARNING_WINDOW_S
    if warning_signal in received and natural_end is not None and natural_end - now <= window + _EARLY_WARNING_S:
        return Cause.TIME_LIMIT
    return Cause.PREEMPTED


def classify_local(end_time: float | None, signal_delay_s: float, received: Collection[int], warning_signal: int,
                   deadline_hit: bool, *, now: float) -> Cause:
    """The cause for a task of submitit's local executor, which times out at `end_time`.

    The controller sends the warning signal `signal_delay_s` before its timeout; earlier it can
    only be a fire drill or someone else's signal, which stands for a preemption.
    """
    near_end = end_time is not None and now >= end_time - signal_delay_s - _TIME_SLACK_S
    return Cause.TIME_LIMIT if deadline_hit or (warning_signal in received and near_end) else Cause.PREEMPTED
