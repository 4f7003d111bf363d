"""The fault-injection suite's summary line: trials, faults injected and bad loads, with the seed.

The counts come from `_faults.TALLY`, which every test adds to; the line is what the README of
this directory quotes for the last long run.
"""

from __future__ import annotations

from typing import Any

from ._faults import TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.kill_trials or TALLY.faults:
        terminalreporter.write_line(TALLY.summary())
