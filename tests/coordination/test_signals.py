"""Signal recording: names, handler hand-over, and DataLoader workers that survive SIGTERM."""

from __future__ import annotations

import os
import signal

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


def test_dataloader_workers_ignore_stop_signals() -> None:
    """SLURM signals every process of a job; a worker killed by SIGTERM would end the loop."""
    loader = DataLoader(_Slow(), batch_size=4, num_workers=2)
    ignore_in_workers(loader, (signal.SIGTERM, signal.SIGUSR2))
    seen = []
    for batch in loader:
        if not seen:
            workers = psutil.Process().children()
            assert len(workers) == 2
            for worker in workers:
                os.kill(worker.pid, signal.SIGTERM)
                os.kill(worker.pid, signal.SIGUSR2)
        seen.append(batch)
    assert torch.cat(seen).tolist() == list(range(64))
