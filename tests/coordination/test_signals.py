"""Signal recording: names, handler hand-over, and DataLoader workers that survive SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from resilient.coordination._signals import SignalRecorder, ignore_in_workers, signal_number


@pytest.mark.parametrize("value, expected", [("USR2", signal.SIGUSR2), ("sigterm", signal.SIGTERM), (10, 10)])
def test_signal_names_and_numbers(value: str | int, expected: int) -> None:
    assert signal_number(value, name="warning_signal") == expected


@pytest.mark.parametrize("value, error", [("USR9", ValueError), (True, TypeError), (9999, ValueError), (1.5, TypeError)])
def test_bad_signals_name_the_parameter(value: object, error: type) -> None:
    with pytest.raises(error, match="warning_signal"):
        signal_number(value, name="warning_signal")  # type: ignore[arg-type]


def test_recorder_only_records_and_gives_the_handlers_back() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    recorder = SignalRecorder([signal.SIGUSR2])
    recorder.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert list(recorder.received) == [signal.SIGUSR2]
    finally:
        recorder.uninstall()
    assert signal.getsignal(signal.SIGUSR2) == before


class _Slow(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(index)


def _ignores(pid: int, signals: tuple[int, ...]) -> bool:
    """Whether the kernel has ``signals`` as ignored for ``pid`` (the SigIgn mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    return all(mask >> (signum - 1) & 1 for signum in signals)


def test_dataloader_workers_ignore_stop_signals() -> None:
    """SLURM signals every process of a job; a worker killed by SIGTERM would end the loop."""
    stop_signals = (signal.SIGTERM, signal.SIGUSR2)
    loader = DataLoader(_Slow(), batch_size=4, num_workers=2)
    ignore_in_workers(loader, stop_signals)
    seen = []
    for batch in loader:
        if not seen:
            workers = psutil.Process().children()
            assert len(workers) == 2
            # The first batch can arrive before the other worker has run its init function.
            deadline = time.monotonic() + 60
            while not all(_ignores(worker.pid, stop_signals) for worker in workers):
                assert time.monotonic() < deadline, "workers never ran their init function"
                time.sleep(0.01)
            for worker in workers:
                os.kill(worker.pid, signal.SIGTERM)
                os.kill(worker.pid, signal.SIGUSR2)
        seen.append(batch)
    assert torch.cat(seen).tolist() == list(range(64))


_CRASH_WITH_LIVE_WORKERS = """
import signal
import subprocess
import sys
from torch.utils.data import DataLoader
from resilient.coordination._signals import ignore_in_workers
loader = DataLoader(list(range(1000)), batch_size=4, num_workers=2)
ignore_in_workers(loader, (signal.SIGTERM, signal.SIGUSR2))
batches = iter(loader)
next(batches)
raise RuntimeError("training crashed")
"""


def test_a_crash_with_live_workers_still_exits() -> None:
    """The iterator outlives the crash (a global here, a traceback in real jobs), so its workers
    are never shut down; exit must not wait forever on workers that ignore SIGTERM."""
    result = subprocess.run([sys.executable, "-c", _CRASH_WITH_LIVE_WORKERS], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("RuntimeError: training crashed")
