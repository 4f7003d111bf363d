"""Stress: many real 2-rank jobs, counting ranks that abort at exit ("terminate called without an
active exception", exit code -6). Not collected by pytest (too slow for the suite); the bounded
regression tests are in test_dist.py. Run from the repository root, e.g.

    .venv/bin/python tests/coordination/stress_exit.py --jobs 40 --stop
    .venv/bin/python tests/coordination/stress_exit.py --jobs 40 --resume
    .venv/bin/python tests/coordination/stress_exit.py --jobs 12 --starved --stop
    .venv/bin/python tests/coordination/stress_exit.py --repo /tmp/old-checkout ...   # compare a commit

Jobs: by default tests/loop/scripts/train.py (DDP on gloo, 4 epochs, step checkpoints); with
--stop rank 1 gets SIGUSR2 at step 9 and both ranks must exit 75, otherwise 0; --resume does
that, then runs the job again to resume and finish (what test_stop_signals.py does). --starved runs
test_dist.py's short job instead, with every helper thread starved (see _STARVED there), which
makes the abort likely when it is possible at all. --load N adds N busy processes meanwhile,
like the loaded machine the abort was first seen on. --parallel jobs run at a time (default 2).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_dist import _JOB  # noqa: E402  (the starved job of the regression test, found via sys.path)

BUSY = "while True: pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_run(directory: Path, args: argparse.Namespace, stop: bool) -> list[tuple[int, int, str]]:
    """Both ranks of one 2-rank run: (expected exit code, exit code, stderr) each."""
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, PYTHONPATH=str(args.repo), OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), STOP="1" if stop else "0")
        if args.starved:
            command = [sys.executable, "-c", _JOB, str(directory / "run")]
        else:
            command = [sys.executable, str(args.repo / "tests/loop/scripts/train.py"),
                       "--run-dir", str(directory / "run"), "--out", str(directory / "out.pt")]
            if stop:
                command += ["--signal-at-step", "9", "--signal", "USR2", "--signal-rank", "1"]
        procs.append(subprocess.Popen(command, env=env, cwd=directory, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    expected = 75 if stop else 0
    return [(expected, proc.returncode, stderr) for proc in procs for stderr in [proc.communicate(timeout=600)[1]]]


def one_job(number: int, args: argparse.Namespace, scratch: Path) -> list[tuple[int, int, str]]:
    directory = scratch / str(number)
    directory.mkdir()
    ranks = one_run(directory, args, stop=args.stop or args.resume)
    if args.resume:  # then run it again: it resumes from the emergency checkpoint and finishes
        ranks += one_run(directory, args, stop=False)
    return ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--stop", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--starved", action="store_true")
    parser.add_argument("--load", type=int, default=0)
    parser.add_argument("--repo", type=Path, default=HERE.parents[1])
    args = parser.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.load)]
    aborted = other = 0
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="stress-exit-") as scratch, ThreadPoolExecutor(args.parallel) as pool:
            for number, ranks in enumerate(pool.map(lambda n: one_job(n, args, Path(scratch)), range(args.jobs))):
                for rank, (expected, code, stderr) in enumerate(ranks):
                    if "terminate called" in stderr:
                        aborted += 1
                        print(f"job {number} process {rank}: exit {code}, aborted at exit", flush=True)
                    elif code != expected:
                        other += 1
                        tail = stderr.strip().splitlines()[-1:] or [""]
                        print(f"job {number} process {rank}: exit {code}: {tail[0]}", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    processes = 2 * args.jobs * (2 if args.resume else 1)
    print(f"{args.jobs} jobs ({processes} rank processes) from {args.repo}: {aborted} aborted at exit, "
          f"{other} other failures, {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
