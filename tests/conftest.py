"""Fixtures more than one test folder needs, and how the suite runs on two pytest-xdist workers.

The suite runs on two workers (``-n 2`` in pyproject.toml): most tests wait on real processes,
fsyncs and a real SLURM cluster, so two at a time use the two cores instead of one. What must
not run side by side is kept on one worker: every SLURM test (one cluster, preempted and drained
by the tests) is in the `xdist_group` "slurm"; the tests of a file with module fixtures (a
trained run, a corpus of outcomes) are grouped with their file, so those are made once; every
other test goes to whichever worker is free, so that no worker is left with a long file while
the other idles. The fault suite's random seed is chosen once, here, and shared with both
workers, so its summary line and every replay line name the seed that ran.
"""

from __future__ import annotations

import importlib
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`mount_tmpfs("2m")`: a tmpfs of that size of the test's own, a disk that really fills up.

    Mounting needs root, as the suite's SLURM cluster does; without it (or where mount is refused)
    the test fails, saying so: a full-disk test that cannot fill a disk would test nothing.
    """
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.fail("mounting a tmpfs to fill up needs root: run the suite as root, as the README says")
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "--lazy", str(point)], check=True)


@pytest.fixture
def benchmark_script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """`benchmark_script("stop_to_exit")`: that script of benchmarks/, imported as benchmarks/all.py imports it."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module


@pytest.fixture
def small_filesystem(mount_tmpfs: Callable[[str], Path]) -> Path:
    """A 2 MiB tmpfs."""
    return mount_tmpfs("2m")


# CI sets this: the suite has no skips of its own, and a skip from elsewhere (a plugin, a fixture
# of a library) would pass there without testing, so under it any skip is a failure.
NO_SKIPS_ENV = "RESILIENT_NO_SKIPS"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(NO_SKIPS_ENV) == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under {NO_SKIPS_ENV}=1, which CI sets: {reason}"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist), before any worker starts
        os.environ.setdefault("RESILIENT_FAULT_SEED", str(random.SystemRandom().randrange(1_000_000)))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups off the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for the workers, the SLURM group first: its minutes of real jobs then run
    beside everything else instead of after it (xdist hands out groups in collection order)."""
    def uses_cluster(item: pytest.Item) -> bool:
        return "slurm_cluster" in getattr(item, "fixturenames", ())

    module_fixtures: dict[Path, bool] = {}

    def has_module_fixtures(path: Path) -> bool:
        if path not in module_fixtures:
            module_fixtures[path] = 'scope="module"' in path.read_text()
        return module_fixtures[path]

    for item in items:
        if uses_cluster(item):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif has_module_fixtures(item.path):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=lambda item: not uses_cluster(item))  # stable: each file's tests keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: add a finished worker's fault tally to the summary line."""
    from tests.faults._faults import TALLY

    counts = getattr(node, "workeroutput", {}).get("fault_tally")
    if counts:
        TALLY.merge(counts)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's line (`tests/faults/conftest.py`), from this process's tally or the workers'."""
    from tests.faults._faults import TALLY

    if TALLY.kill_trials or TALLY.faults:
        terminalreporter.write_line(TALLY.summary())
