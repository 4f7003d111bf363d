"""How often a run may come back: after preemptions and time limits, and after crashes, and what never comes back."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import check_count
from ._cause import Cause


@dataclass(frozen=True)
class RequeuePolicy:
    """Bounds on automatic requeues, counted across restarts of the same job.

    Args:
        max_requeues: requeues after preemption or a time limit; None (default) means no bound,
            since neither is the job's fault.
        max_crash_requeues: requeues after an exception in the training code; 0 (default) means
            an exception fails the job, as a bug usually repeats.
    """

    max_requeues: int | None = None
    max_crash_requeues: int = 0

    def __post_init__(self) -> None:
        check_count("max_requeues", self.max_requeues, minimum=0, none_means="no bound")
        check_count("max_crash_requeues", self.max_crash_requeues, minimum=0)

    def allows(self, cause: Cause, done_before: int) -> bool:
        """May a run that was requeued `done_before` times for this kind of cause come back again?"""
        bound = self.max_crash_requeues if cause == Cause.CRASHED else self.max_requeues
        return bound is None or done_before < bound


class SetupRefused(Exception):
    """Base of the errors with which resilient refuses how a run is set up (a Trainer argument that
    would defeat its guarantees, ranks started the wrong way).

    Starting the run again cannot help, so it fails at once whatever `max_crash_requeues` allows,
    instead of spending each requeue in the queue only to be refused again.
    """
