"""The boundary: where every rank agrees whether to stop and which rules fire.

A checkpoint is only ever taken at a boundary (after a step, when an epoch's batches end, after
an epoch), because there the optimizer step is complete, no batch is half-consumed and every
rank is at the same point. `Boundaries.decide` is the one place that, for each of the three
phases, exchanges the stop flags and picks the rules due; `StopFlags` owns the layout of the
int vector the ranks exchange, so it is encoded and decoded in one place.
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
from ..rundir import Event
from ._journal import Journal
from ._progress import Phase

Fired = list[tuple[CheckpointRule, bool]]  # the rules due at a boundary, each with whether time fired it


@dataclass(frozen=True)
class StopFlags:
    """One boundary's flags: why to stop (if at all), and which time rules fire.

    Encoded as ``[warning, SIGTERM, SIGINT, deadline, *one per time rule]``, the vector the
    ranks reduce by element-wise maximum. Signals may reach any rank; the deadline and the time
    rules are rank 0's decisions.
    """

    warning: bool = False
    sigterm: bool = False
    sigint: bool = False
    deadline: bool = False
    timed: tuple[bool, ...] = ()

    STOPS: ClassVar[int] = 4  # the stop flags before the time rules' ones

    @classmethod
    def width(cls, time_rules: int) -> int:
        return cls.STOPS + time_rules

    @classmethod
    def observed(cls, received: Collection[int], warning_signal: int, *, deadline: bool,
                 timed: Sequence[bool]) -> StopFlags:
        """This rank's view: the signals it received, and (rank 0) the deadline and time rules due."""
        return cls(warning_signal in received, signal.SIGTERM in received, signal.SIGINT in received,
                   deadline, tuple(timed))

    def encode(self) -> list[int]:
        return [int(flag) for flag in (self.warning, self.sigterm, self.sigint, self.deadline, *self.timed)]

    @classmethod
    def decode(cls, vector: Sequence[int]) -> StopFlags:
        warning, sigterm, sigint, deadline = (bool(flag) for flag in vector[: cls.STOPS])
        return cls(warning, sigterm, sigint, deadline, tuple(bool(flag) for flag in vector[cls.STOPS :]))

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
        self._signals = signals
        self._warning_signal = warning_signal
        self._deadline = deadline
        self._agreement = agreement
        self._journal = journal
        self._last = time.monotonic()
        self.fire_drill_at: int | None = None  # a step at which rank 0 sends itself the warning signal

    def decide(self, phase: Phase, step: int, epoch: int, save_seconds: float | None) -> tuple[Fired, StopFlags | None]:
        """The rules that fire at this boundary, and the agreed stop flags (None: go on).

        After a step, time and step triggers fire; when the epoch's batches end or after the
        epoch, the epoch trigger of the rules that save then. The end of the batches exchanges
        nothing: the epoch's end comes right after it.
        """
        if phase is Phase.STEP and step == self.fire_drill_at and self._dist.rank == 0 and self._signals.active:
            self._journal.record(Event.FIRE_DRILL, step=step)
            os.kill(os.getpid(), self._warning_signal)
        flags = None if phase is Phase.TRAIN_END else self._agree(step, phase is Phase.STEP, save_seconds)
        if phase is Phase.STEP:
            assert flags is not None
            timed = [rule for rule, flag in zip(self._time_rules, flags.timed) if flag]
            fired = [(rule, rule in timed) for rule in self._rules if rule in timed or rule.step_due(step)]
        else:
            on_train_end = phase is Phase.TRAIN_END
            fired = [(rule, False) for rule in self._rules
                     if rule.epoch_end_on_train == on_train_end and rule.epoch_due(epoch)]
        return fired, flags if flags is not None and flags.stopping else None

    def _agree(self, step: int, time_rules: bool, save_seconds: float | None) -> StopFlags:
        now = time.monotonic()
        step_seconds, self._last = now - self._last, now
        rank0 = self._dist.rank == 0
        observed = StopFlags.observed(
            self._signals.received, self._warning_signal,
            deadline=rank0 and self._deadline.near(step_seconds, save_seconds),
            timed=[time_rules and rank0 and rule.time_due() for rule in self._time_rules],
        )
        agreed = StopFlags.decode(self._agreement.exchange(observed.encode()))
        if agreed.stopping:
            self._agreement.drain()  # nothing may be in flight when the checkpoint's collectives start
            self._journal.record(Event.SIGNAL, step=step, reasons=agreed.reasons(self._warning_signal))
        return agreed
