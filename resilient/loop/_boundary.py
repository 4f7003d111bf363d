"""The boundary: where every rank agrees whether to stop and which rules fire.

A checkpoint is only ever taken at a boundary (after a step, when an epoch's batches end, after
an epoch), because there the optimizer step is complete, no batch is half-consumed and every
rank is at the same point. `Boundaries.decide` is the one place that, for each of the three
phases, exchanges the stop flags and picks the rules due; `StopFlags` owns the layout of the
int vector the ranks exchange, so it is encoded and decoded in one place.

A step boundary runs after every batch, so the usual one (no signal, nothing due) is kept to a few
comparisons: the next step a step rule is due at is computed once (`CheckpointRule.next_step_due`),
the clock is read only when a time rule or a deadline needs it, and a rank that saw nothing
contributes None to the agreement instead of a flag vector.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..coordination import Deadline, DistInfo, SignalRecorder, StepAgreement
from ..rules import CheckpointRule
from ..rundir import Event, Heartbeat
from ._journal import Journal
from ._progress import Phase

Fired = Sequence[tuple[CheckpointRule, bool]]  # the rules due at a boundary, each with whether time fired it
NOTHING_FIRED: Fired = ()  # shared, so that a quiet boundary allocates nothing
NEVER = float("inf")  # the next step due when no rule saves by steps


@dataclass(frozen=True)
class StopFlags:
    """One boundary's flags: why to stop (if at all), and which time rules fire.

    Encoded as ``[warning, SIGTERM, SIGINT, deadline, written, *one per time rule]``, the
    vector the ranks reduce by element-wise maximum. Signals may reach any rank; the deadline,
    the time rules and `written` (its background write has ended: every rank settles it now)
    are rank 0's.
    """

    warning: bool = False
    sigterm: bool = False
    sigint: bool = False
    deadline: bool = False
    written: bool = False
    timed: tuple[bool, ...] = ()

    FIXED: ClassVar[int] = 5  # the flags before the time rules' ones

    @classmethod
    def width(cls, time_rules: int) -> int:
        return cls.FIXED + time_rules

    @classmethod
    def observed(cls, received: Collection[int], warning_signal: int, *, deadline: bool, written: bool,
                 timed: Sequence[bool]) -> StopFlags:
        """This rank's view: the signals it received, and (rank 0) the deadline, its background
        write's end and the time rules due."""
        return cls(warning_signal in received, signal.SIGTERM in received, signal.SIGINT in received,
                   deadline, written, tuple(timed))

    def encode(self) -> list[int]:
        flags = (self.warning, self.sigterm, self.sigint, self.deadline, self.written, *self.timed)
        return [int(flag) for flag in flags]

    @classmethod
    def decode(cls, vector: Sequence[int]) -> StopFlags:
        warning, sigterm, sigint, deadline, written = (bool(flag) for flag in vector[: cls.FIXED])
        return cls(warning, sigterm, sigint, deadline, written, tuple(bool(flag) for flag in vector[cls.FIXED :]))

    @property
    def stopping(self) -> bool:
        return self.warning or self.sigterm or self.sigint or self.deadline

    def signals(self, warning_signal: int) -> set[int]:
        """The stop signals set, as numbers."""
        pairs = ((warning_signal, self.warning), (signal.SIGTERM, self.sigterm), (signal.SIGINT, self.sigint))
        return {int(signum) for signum, flag in pairs if flag}

    def reasons(self, warning_signal: int) -> list[str]:
        """The stop flags set, as events.jsonl names them (the warning by its signal's name)."""
        names = (signal.Signals(warning_signal).name, "SIGTERM", "SIGINT", "deadline")
        return [name for name, flag in zip(names, (self.warning, self.sigterm, self.sigint, self.deadline)) if flag]


class Interrupted(BaseException):
    """Raised at the agreed boundary after the emergency checkpoint is committed.

    A BaseException, like KeyboardInterrupt, so that a training loop's `except Exception` does
    not swallow it on its way to `Run.__exit__`, which requeues or exits.
    """

    def __init__(self, flags: StopFlags, checkpoint: str) -> None:
        super().__init__(f"stopped at a step boundary; emergency checkpoint {checkpoint}")
        self.flags = flags
        self.checkpoint = checkpoint


class Boundaries:
    """Decides, at every boundary and identically on every rank, the rules due and whether to stop."""

    def __init__(self, dist: DistInfo, rules: Sequence[CheckpointRule], signals: SignalRecorder,
                 warning_signal: int, deadline: Deadline, agreement: StepAgreement, journal: Journal) -> None:
        self._dist = dist
        self._rules = rules
        self._time_rules = [rule for rule in rules if rule.timed]
        self._untimed = (False,) * len(self._time_rules)  # what a rank that does not time the rules contributes
        self._signals = signals
        self._warning_signal = warning_signal
        self._deadline = deadline
        self._agreement = agreement
        self._journal = journal
        self._last = time.monotonic()
        self._next_step_due: float = 0  # the first step always asks the rules (a resumed run starts anywhere)
        self.fire_drill_at: int | None = None  # a step at which rank 0 sends itself the warning signal
        self.heartbeat: Heartbeat | None = None  # rank 0's: the step reached, kept past a SIGKILL

    def decide(self, phase: Phase, step: int, epoch: int, save_seconds: float | None,
               written: bool) -> tuple[Fired, StopFlags | None, bool]:
        """The rules that fire at this boundary, the agreed stop flags (None: go on), and whether
        every rank settles rank 0's background write now (`written`: rank 0's has ended).

        After a step, time and step triggers fire; when the epoch's batches end or after the
        epoch, the epoch trigger of the rules that save then. The end of the batches exchanges
        nothing: the epoch's end comes right after it.
        """
        if phase is Phase.STEP:
            if self.heartbeat is not None:
                self.heartbeat.beat(step)
            if step == self.fire_drill_at and self._dist.rank == 0 and self._signals.active:
                self._journal.record(Event.FIRE_DRILL, step=step)
                os.kill(os.getpid(), self._warning_signal)
            flags = self._agree(step, True, save_seconds, written)
            fired = self._fired_at_step(step, flags)
        else:
            flags = None if phase is Phase.TRAIN_END else self._agree(step, False, save_seconds, written)
            on_train_end = phase is Phase.TRAIN_END
            fired = [(rule, False) for rule in self._rules
                     if rule.epoch_end_on_train == on_train_end and rule.epoch_due(epoch)]
        if flags is None:
            return fired, None, False
        return fired, flags if flags.stopping else None, flags.written

    def _fired_at_step(self, step: int, flags: StopFlags | None) -> Fired:
        """The step and time triggers due; asks the rules only at a step one is due or when time fired."""
        if step < self._next_step_due and (flags is None or True not in flags.timed):
            return NOTHING_FIRED
        timed = [rule for rule, flag in zip(self._time_rules, flags.timed) if flag] if flags is not None else []
        fired = [(rule, rule in timed) for rule in self._rules if rule in timed or rule.step_due(step)]
        if step >= self._next_step_due:
            self._next_step_due = min((due for rule in self._rules if (due := rule.next_step_due(step)) is not None),
                                      default=NEVER)
        return fired

    def _agree(self, step: int, time_rules: bool, save_seconds: float | None, written: bool) -> StopFlags | None:
        """The flags every rank acts on now; None when none is set."""
        observed = self._observe(time_rules, save_seconds, written)
        vector = self._agreement.exchange(None if observed is None else observed.encode())
        if vector is None:
            return None
        agreed = StopFlags.decode(vector)
        if agreed.stopping:
            self._agreement.drain()  # nothing may be in flight when the checkpoint's collectives start
            self._journal.record(Event.SIGNAL, step=step, reasons=agreed.reasons(self._warning_signal))
        return agreed

    def _observe(self, time_rules: bool, save_seconds: float | None, written: bool) -> StopFlags | None:
        """This rank's view, or None when it saw nothing: no signal, no deadline near, no time rule
        due, no background write ended.

        The clock is read only for a deadline (rank 0's, to time the step) or a time rule (rank 0's).
        """
        deadline = self._deadline.active and self._deadline_near(save_seconds)
        timed = self._times_due() if time_rules and self._dist.rank == 0 else self._untimed
        received = self._signals.received
        if not received and not deadline and not written and True not in timed:
            return None
        return StopFlags.observed(received, self._warning_signal, deadline=deadline, written=written, timed=timed)

    def _times_due(self) -> Sequence[bool]:
        """Whether each time rule is due; a new sequence only when one is (the timers are rank 0's)."""
        for rule in self._time_rules:
            if rule.time_due():
                return [rule.time_due() for rule in self._time_rules]
        return self._untimed

    def _deadline_near(self, save_seconds: float | None) -> bool:
        now = time.monotonic()
        step_seconds, self._last = now - self._last, now
        return self._deadline.near(step_seconds, save_seconds)
