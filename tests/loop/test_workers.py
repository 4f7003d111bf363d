"""DataLoader workers: they survive stop signals, die with their parent, never hold the run
lock, and let a crashed job exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from resilient.loop._workers import prepare_workers
from resilient.rundir._lock import RunLock, lock_holder


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
    prepare_workers(loader, stop_signals)
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
from resilient.loop._workers import prepare_workers
loader = DataLoader(list(range(1000)), batch_size=4, num_workers=2)
prepare_workers(loader, (signal.SIGTERM, signal.SIGUSR2))
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
    # a worker's own warning (a list takes no per-sample seeds) may print after the traceback
    assert "RuntimeError: training crashed" in result.stderr.splitlines()


_KILLED_WITH_BUSY_WORKERS = """
import os, sys, time
import torch
from torch.utils.data import DataLoader, Dataset
import resilient

class Busy(Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, index):
        if index >= 4:
            time.sleep(600)  # a worker stuck in a slow item when its main process is killed
        return torch.tensor(index)

with resilient.Run(checkpoint=[], run_dir=sys.argv[1]) as run:
    loader = DataLoader(Busy(), batch_size=4, num_workers=2, sampler=resilient.ResumableSampler(Busy(), shuffle=False))
    for batch in run.batches(loader):
        print(*(child.pid for child in __import__("psutil").Process().children()), flush=True)
        time.sleep(600)
"""


def test_a_killed_jobs_busy_workers_die_with_it_and_never_hold_the_run_lock(tmp_path: Path) -> None:
    job = subprocess.Popen([sys.executable, "-c", _KILLED_WITH_BUSY_WORKERS, str(tmp_path)],
                           stdout=subprocess.PIPE, text=True)
    assert job.stdout is not None
    workers = [psutil.Process(int(pid)) for pid in job.stdout.readline().split()]
    assert len(workers) == 2
    job.kill()
    job.wait(timeout=60)
    # The workers go with their parent (the kernel's parent-death signal), not 600 s later...
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, f"workers outlived their killed main process: {alive}"
    # ...and even while they lived, they never held the lock: a restart takes it at once.
    lock = RunLock(tmp_path)
    lock.acquire("restart", wait=False)
    lock.release()


def test_forked_children_never_hold_the_run_lock(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    lock.acquire("job")
    reader, writer = os.pipe()
    started_reader, started_writer = os.pipe()
    child = os.fork()
    if child == 0:  # a forked copy, like a DataLoader worker: it outlives the lock's release below
        os.close(writer)
        os.write(started_writer, b"!")  # by now the at-fork hooks have run
        os.read(reader, 1)
        os._exit(0)
    os.close(reader)
    os.read(started_reader, 1)
    try:
        lock.release()
        assert lock_holder(tmp_path) is None  # the child's inherited descriptor was closed at fork
    finally:
        os.close(writer)
        os.waitpid(child, 0)
