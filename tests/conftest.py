"""Fixtures more than one test folder needs."""

from __future__ import annotations

import importlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`mount_tmpfs("2m")`: a tmpfs of that size of the test's own, a disk that really fills up.

    Mounting needs root; without it (or where mount is refused) the test is skipped, saying so.
    """
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs to fill up needs root")
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
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


# CI sets this: there a test that cannot run (no root to mount, no SCHED_IDLE) is a broken
# machine, not a reason to pass without testing; a developer's laptop may still skip, saying why.
NO_SKIPS_ENV = "RESILIENT_NO_SKIPS"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(NO_SKIPS_ENV) == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under {NO_SKIPS_ENV}=1, which CI sets: {reason}"
