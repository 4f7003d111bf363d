"""The deadline stops a run in time when no warning comes: its arithmetic, with the end time a
SLURM job reads from its own record (recorded), and a clock set at will."""

from __future__ import annotations

import pytest

from resilient.coordination._deadline import (
    FIRST_SAVE_GUESS_S,
    SAVE_SAFETY_FACTOR,
    Deadline,
)
from resilient.requeue import SlurmHost

from ._recorded import RecordedScheduler, at

END = "2026-11-28T21:09:06"  # time_limit_warning.txt: StartTime + 1 minute


def _deadline(now: float, margin_s: float = 20.0) -> Deadline:
    end = SlurmHost(job_id="4711", scheduler=RecordedScheduler("time_limit_warning")).end_time()
    return Deadline(end, margin_s=margin_s, clock=lambda: now)


def test_near_once_a_step_a_save_and_the_margin_no_longer_fit() -> None:
    needed = 2.0 + SAVE_SAFETY_FACTOR * 4.0 + 20.0
    assert not _deadline(at(END) - needed - 1).near(step_seconds=2.0, save_seconds=4.0)
    assert _deadline(at(END) - needed).near(step_seconds=2.0, save_seconds=4.0)
    assert _deadline(at(END) + 1).near(step_seconds=0.0, save_seconds=0.0)


def test_before_the_first_save_is_timed_a_guess_stands_for_it() -> None:
    needed = 1.0 + SAVE_SAFETY_FACTOR * FIRST_SAVE_GUESS_S + 20.0
    assert not _deadline(at(END) - needed - 0.5).near(step_seconds=1.0, save_seconds=None)
    assert _deadline(at(END) - needed).near(step_seconds=1.0, save_seconds=None)


@pytest.mark.parametrize("margin_s", [0.0, 60.0])
def test_the_margin_moves_the_stop_earlier(margin_s: float) -> None:
    assert _deadline(at(END) - margin_s - 0.5, margin_s=margin_s).near(step_seconds=0.5, save_seconds=0.0)
    assert not _deadline(at(END) - margin_s - 0.6, margin_s=margin_s).near(step_seconds=0.5, save_seconds=0.0)


def test_a_job_without_an_end_is_never_near_it() -> None:
    end = SlurmHost(job_id="4711", scheduler=RecordedScheduler("unlimited")).end_time()
    assert not Deadline(end, margin_s=20.0, clock=lambda: 10.0**12).near(step_seconds=10**9, save_seconds=10**9)
