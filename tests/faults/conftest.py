"""The fault-injection suite's summary line: trials, faults injected and bad loads, with the seed.

The counts come from `_faults.TALLY`, which every test adds to; the line is what the README of
this directory quotes for the last long run; `tests/conftest.py` prints it, after adding up the
tallies pytest-xdist's workers hand over here.
"""

from __future__ import annotations

import pytest

from ._faults import TALLY


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: its controller prints the line
        workeroutput["fault_tally"] = TALLY.counts()
