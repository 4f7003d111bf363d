"""Goodput: where a run's wall time went, computed from its events alone (no torch, no I/O).

A preempted, killed or requeued run spends its hours on more than training: waiting in the queue,
restoring, stalling for checkpoints, stopping, and training again the steps a kill lost. Users
ask "what did preemption cost me?"; this answers it from `events.jsonl` (and, for a last start
that died without a word, its heartbeat) as a *partition* of the wall time: every instant from
the first submission (or first start) to the end (or now, for a live run) belongs to exactly one
part, so the parts add up to the wall time by construction.

Each start contributes intervals: queued (from the submission, or the requeue that ended the start
before, to `started`), restoring (`started` to `first_step`), training (`first_step` to the stop
agreed, the end, the last heartbeat, or now), checkpointing (each checkpoint's stall), stopping
(the `signal` event, where the ranks agreed to stop, to the end event: the emergency checkpoint
and the end's record; what follows, the exit and the requeue, is the next start's queue), and
redone (training after the moment the checkpoint the next start resumed from was taken, which a
kill or a crash threw away). A start killed without a word ends where its pace says its last
step (the heartbeat's) was done: the heartbeat keeps steps, not times. Where intervals overlap, the later part of that list wins (a stall
inside redone training is checkpointing; the emergency checkpoint is stopping); an instant no
interval covers is `other` (after a start that died, until someone started the run again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._events import Event
from ._heartbeat import Beat
from ._vocabulary import Vocabulary


class Part(Vocabulary):
    """Where a moment of a run's wall time went; in rising precedence where two claim it."""

    OTHER = "other"  # nothing accounts for it: after a start died, until the run was started again
    QUEUED = "queued"  # submitted or requeued, not started yet
    RESTORING = "restoring"  # started: process group, finding and loading the checkpoint, the first step
    TRAINING = "training"  # productive: training whose steps were kept
    REDONE = "redone"  # training after the last checkpoint of a start that died: the next start repeats it
    CHECKPOINTING = "checkpointing"  # training stalled for a save (for an asynchronous one, the copy)
    STOPPING = "stopping"  # the ranks agreed to stop: the emergency checkpoint, the end's record


_ENDS = {Event.FINISHED, Event.FAILED, Event.GAVE_UP, Event.CANCELLED, Event.STOPPED, Event.REQUEUED}
RUNNING = "running"  # how a live start ends, so far


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True)
class Segment:
    """One stretch of wall time spent one way (seconds since the epoch)."""

    part: Part
    begin: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.begin


@dataclass(frozen=True)
class Lane:
    """A row of the timeline: its segments, and when stop signals and checkpoints came."""

    segments: tuple[Segment, ...]
    signals: tuple[float, ...] = ()
    checkpoints: tuple[float, ...] = ()


@dataclass(frozen=True)
class Interruption:
    """A start that ended before the run did: why, and the steps the next start had to do again."""

    start: int  # 1-based
    cause: str  # the requeue's cause, the end event's name, or `lost` (no end recorded: a SIGKILL)
    time: float
    step: int | None  # the steps finished when it ended (None: not recorded)
    resumed_at: int | None  # the step the run went on from (the next start's, or the newest checkpoint's)
    steps_lost: int | None


@dataclass
class _Start:
    """One start as its events tell it, gathered in one pass."""

    began: float
    queued_from: float | None
    restored: float | None = None  # the first step done (or, in runs before that event, the resume)
    stop: float | None = None
    ended: float | None = None
    end: str = RUNNING
    cause: str | None = None
    step: int | None = None  # the steps finished at its end
    resumed_step: int | None = None
    last_seen: float = 0.0
    stalls: list[tuple[float, float]] = field(default_factory=list)
    checkpoints: list[tuple[float, int | None, float]] = field(default_factory=list)  # time, step, taken at
    signals: list[float] = field(default_factory=list)
    paces: list[tuple[int, float]] = field(default_factory=list)  # (step, when it was reached), as events say

    def died(self, step: int | None) -> float:
        """When a start that stopped without a word after `step` steps died: its pace (from the first
        step and time its events tell to the last) carried on from the last; its last event without one.

        The heartbeat keeps the step, not its time (`_heartbeat.py`), so this is an estimate.
        """
        known = sorted(self.paces)
        if step is None or len(known) < 2:
            return self.last_seen
        (first, began), (last, reached) = known[0], known[-1]
        if last <= first or step <= last:
            return self.last_seen
        return max(self.last_seen, reached + (step - last) * (reached - began) / (last - first))

    def see(self, moment: float) -> None:
        self.last_seen = max(self.last_seen, moment)

    def close(self, moment: float, end: str, cause: str | None, step: int | None) -> None:
        self.ended, self.end, self.cause = max(moment, self.last_seen), end, cause
        self.step = step if step is not None else self.step


@dataclass(frozen=True)
class Goodput:
    """A run's wall time, its partition into parts, its starts as timeline lanes, and its interruptions."""

    began: float
    ended: float
    live: bool
    parts: dict[Part, float]
    lanes: tuple[Lane, ...]  # one per start (and one for a submission not started yet)
    interruptions: tuple[Interruption, ...]

    @property
    def wall(self) -> float:
        return self.ended - self.began

    @property
    def percent(self) -> float | None:
        """Productive training over wall time, in percent (None before any time has passed)."""
        return 100 * self.parts[Part.TRAINING] / self.wall if self.wall > 0 else None

    def lane(self) -> Lane:
        """The whole run on one lane (a sweep's task, say)."""
        return Lane(tuple(segment for lane in self.lanes for segment in lane.segments),
                    tuple(moment for lane in self.lanes for moment in lane.signals),
                    tuple(moment for lane in self.lanes for moment in lane.checkpoints))

    def to_json(self) -> dict[str, Any]:
        """As `resilient report --json` prints it: times in seconds from the run's beginning."""
        def offset(moment: float) -> float:
            return round(moment - self.began, 3)

        return {
            "began": datetime.fromtimestamp(self.began).astimezone().isoformat(timespec="milliseconds"),
            "wall_seconds": round(self.wall, 3), "live": self.live,
            "goodput_percent": None if self.percent is None else round(self.percent, 2),
            "parts": {part.value: {"seconds": round(seconds, 3),
                                   "percent": round(100 * seconds / self.wall, 2) if self.wall > 0 else 0.0}
                      for part, seconds in self.parts.items()},
            "interruptions": [{"start": each.start, "cause": each.cause, "at": offset(each.time), "step": each.step,
                               "resumed_at": each.resumed_at, "steps_lost": each.steps_lost}
                              for each in self.interruptions],
            "starts": [{"segments": [[segment.part.value, offset(segment.begin), offset(segment.end)]
                                     for segment in lane.segments],
                        "signals": [offset(moment) for moment in lane.signals],
                        "checkpoints": [offset(moment) for moment in lane.checkpoints]} for lane in self.lanes],
        }


def goodput(events: Sequence[dict[str, Any]], *, now: float, live: bool, heartbeat: Beat | None = None) -> Goodput:
    """The goodput of a run from its events, oldest first (as `read_history` gives them).

    `live`: the run's job is pending or running (its wall time ends `now`); else it ends at its
    last known moment. `heartbeat`: what the run's heartbeat holds, which tells where a last start
    that died without an end event got to.
    """
    starts, pending = _starts(events, live=live, now=now, heartbeat=heartbeat)
    moments = [_at(event["time"]) for event in events]
    began = min(moments, default=now)
    ended = now if live else max([*moments, *(start.ended or start.began for start in starts)], default=now)
    interruptions = _interruptions(starts, events)
    intervals = [interval for number, start in enumerate(starts) for interval in _intervals(start, number, starts,
                                                                                            interruptions)]
    if pending is not None:
        intervals.append((Part.QUEUED, pending, ended))
    segments = _paint(intervals, began, ended)
    parts = dict.fromkeys(Part, 0.0)
    for segment in segments:
        parts[segment.part] += segment.seconds
    return Goodput(began, ended, live, parts, _lanes(segments, starts, pending, began, ended),
                   tuple(interruptions.values()))


def _starts(events: Sequence[dict[str, Any]], *, live: bool, now: float,
            heartbeat: Beat | None) -> tuple[list[_Start], float | None]:
    """Each start, and when a submission not started yet was queued (None: there is none)."""
    starts: list[_Start] = []
    queued_from: float | None = None
    current: _Start | None = None
    for event in events:
        kind, moment = event["event"], _at(event["time"])
        if kind == Event.SUBMITTED:
            queued_from = moment if queued_from is None else queued_from
        elif kind == Event.STARTED:
            if current is not None:  # it never said how it ended, and no later start could say it for it
                current.close(current.last_seen, Event.LOST, Event.LOST, None)
            current = _Start(moment, queued_from, last_seen=moment)
            starts.append(current)
            queued_from = None
        elif current is None:
            if kind in _ENDS:  # a submission that never started ended (cancelled while pending)
                queued_from = None
            continue
        elif kind == Event.LOST:
            current.close(current.died(event.get("step")), Event.LOST, Event.LOST, event.get("step"))
            current = None
        elif kind in _ENDS:
            current.see(moment)
            current.close(moment, kind, event.get("cause") or kind, event.get("step", current.step))
            current = None
            if kind == Event.REQUEUED:
                queued_from = moment
        else:
            _note(current, kind, moment, event)
    if current is not None:
        if live:
            current.close(now, RUNNING, None, heartbeat.step if heartbeat else None)
        else:
            step = heartbeat.step if heartbeat is not None else None
            current.close(current.died(step), Event.LOST, Event.LOST, step)
    # A start without a first step was restoring throughout; in a run written before that event
    # (and without a resume), training is all there is to tell.
    stepping = any(event["event"] == Event.FIRST_STEP for event in events)
    for start in starts:
        if start.restored is None:
            start.restored = start.ended if stepping or start.end == RUNNING else start.began
    return starts, queued_from if live else None


def _note(start: _Start, kind: str, moment: float, event: dict[str, Any]) -> None:
    """What an event within a start tells of it."""
    start.see(moment)
    if kind == Event.FIRST_STEP or kind == Event.RESUMED and start.restored is None:
        start.restored = moment
    if kind in (Event.FIRST_STEP, Event.SIGNAL) and event.get("step") is not None:
        start.paces.append((event["step"], moment))
    if kind == Event.RESUMED:
        start.resumed_step = event.get("step")
    elif kind == Event.SIGNAL:
        start.stop = moment if start.stop is None else start.stop
        start.signals.append(moment)
        start.step = event.get("step", start.step)
    elif kind == Event.FIRE_DRILL:
        start.signals.append(moment)
    elif kind == Event.CHECKPOINT:
        taken = moment
        if "stalled_at" in event and event.get("stall_seconds") is not None:
            stalled = _at(event["stalled_at"])
            taken = stalled + event["stall_seconds"]
            start.stalls.append((stalled, taken))
        start.checkpoints.append((moment, event.get("step"), taken))
        if event.get("step") is not None:
            start.paces.append((event["step"], taken))


def _interruptions(starts: list[_Start], events: Sequence[dict[str, Any]]) -> dict[int, Interruption]:
    """Each start that ended before the run did, by its index, with the steps the run lost there."""
    interruptions = {}
    for number, start in enumerate(starts):
        if start.end in (Event.FINISHED, RUNNING):
            continue
        if number + 1 < len(starts):
            resumed = starts[number + 1].resumed_step or 0  # a start that resumed nothing began at 0
        else:  # what a next start would resume from: the newest checkpoint committed by then
            steps = [step for each in starts[: number + 1] for _, step, _ in each.checkpoints if step is not None]
            resumed = max(steps, default=0)
        lost = None if start.step is None else max(start.step - resumed, 0)
        assert start.ended is not None
        interruptions[number] = Interruption(number + 1, start.cause or start.end, start.ended, start.step, resumed,
                                             lost)
    return interruptions


def _intervals(start: _Start, number: int, starts: list[_Start],
               interruptions: dict[int, Interruption]) -> list[tuple[Part, float, float]]:
    """The parts' intervals this start claims (overlaps are settled by the parts' precedence)."""
    assert start.ended is not None and start.restored is not None
    restored = start.restored
    trained_until = start.stop if start.stop is not None else start.ended
    claimed = [(Part.RESTORING, start.began, min(restored, start.ended)), (Part.TRAINING, restored, trained_until)]
    if start.queued_from is not None:
        claimed.append((Part.QUEUED, start.queued_from, start.began))
    if start.stop is not None:
        claimed.append((Part.STOPPING, start.stop, start.ended))
    claimed += [(Part.CHECKPOINTING, begin, end) for begin, end in start.stalls]
    interruption = interruptions.get(number)
    if interruption is not None and interruption.steps_lost:
        # Redone: what was trained after the checkpoint the run went on from was taken (all of
        # this start's training if that checkpoint is older than the start).
        taken = [taken for _, step, taken in start.checkpoints if step == interruption.resumed_at]
        claimed.append((Part.REDONE, max(taken[-1], restored) if taken else restored, trained_until))
    return claimed


def _paint(intervals: Iterable[tuple[Part, float, float]], began: float, ended: float) -> list[Segment]:
    """The wall time [began, ended] cut into segments, each the part of highest precedence there
    (`other` where no interval reaches): a partition, so the segments add up to the wall time."""
    precedence = list(Part)
    edges: list[tuple[float, int, int]] = []  # time, +1 opens / -1 closes, part's precedence
    for part, begin, end in intervals:
        begin, end = max(begin, began), min(end, ended)
        if end > begin:
            rank = precedence.index(part)
            edges += [(begin, 1, rank), (end, -1, rank)]
    edges.sort()
    open_parts = [0] * len(precedence)
    segments: list[Segment] = []
    cursor = began
    for moment, change, rank in [*edges, (ended, 0, 0)]:
        if moment > cursor:
            top = max((rank for rank, count in enumerate(open_parts) if count), default=0)
            part = precedence[top]
            if segments and segments[-1].part == part:
                segments[-1] = Segment(part, segments[-1].begin, moment)
            else:
                segments.append(Segment(part, cursor, moment))
            cursor = moment
        open_parts[rank] += change
    return segments


def _lanes(segments: list[Segment], starts: list[_Start], pending: float | None, began: float,
           ended: float) -> tuple[Lane, ...]:
    """The segments cut into one lane per start, each from its queue (or its start) to the next one's,
    so that what follows a start that died (until the run was submitted again) is in its lane; a
    submission not started yet gets a lane of its own."""
    opens = [start.queued_from if start.queued_from is not None else start.began for start in starts]
    if pending is not None:
        opens.append(pending)
    bounds = [*opens[1:], ended]
    lanes = []
    low = began
    for number, high in enumerate(bounds):
        cut = tuple(Segment(segment.part, max(segment.begin, low), min(segment.end, high)) for segment in segments
                    if segment.end > low and segment.begin < high)
        start = starts[number] if number < len(starts) else None
        lanes.append(Lane(cut, tuple(start.signals) if start else (),
                          tuple(moment for moment, _, _ in start.checkpoints) if start else ()))
        low = high
    return tuple(lanes)
