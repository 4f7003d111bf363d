"""How long does a `resilient` command take to start, next to Python itself?

Runs `resilient --help`, `status` and `logs` (on a finished run made here) as fresh processes,
alternating with the anchor `python -c pass` in every round, and reports each one's best time
and its ratio to the anchor's best. The issue's target is at most 0.3 s for each of them; the
full run also times `python -c "import torch"`, what each command paid before it stopped
importing torch.

    python benchmarks/cli_startup.py --json startup.json

`rows()` returns the same rows as data (`benchmarks/all.py` runs it with the other benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _timing import Row, best_seconds, row

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.3
ANCHOR = "python -c pass"
REFERENCE = "python -c 'import torch' (reference)"


def _finished_run(runs: Path) -> None:
    """./runs/done: a one-task local job that completed (its controller's pid is dead)."""
    from resilient.rundir import JobRecord, update_status, write_record

    run_dir = runs / "done"
    run_dir.mkdir(parents=True)
    ended = subprocess.Popen(["true"])
    ended.wait()
    write_record(run_dir, JobRecord(job_id=str(ended.pid), executor="local", name="done", submitted=time.time(),
                                    host=socket.gethostname(), tasks=1, warning_signal=int(signal.SIGUSR2)))
    with update_status(run_dir) as status:
        status.job_id, status.state = str(ended.pid), "completed"


def _process(argv: list[str], cwd: Path, env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return run


def _best(repeats: int, reference: bool) -> dict[str, float]:
    """Best seconds of each command, the anchor's and (`reference`) importing torch's."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as cwd:
        _finished_run(Path(cwd) / "runs")
        python = [sys.executable]
        works = {
            ANCHOR: _process([*python, "-c", "pass"], Path(cwd), env),
            "resilient --help": _process([*python, "-m", "resilient", "--help"], Path(cwd), env),
            "resilient status": _process([*python, "-m", "resilient", "status"], Path(cwd), env),
            "resilient logs": _process([*python, "-m", "resilient", "logs", "done"], Path(cwd), env),
        }
        if reference:
            works[REFERENCE] = _process([*python, "-c", "import torch"], Path(cwd), env)
        best = dict.fromkeys(works, float("inf"))
        for _ in range(repeats):  # alternating: a busy moment slows every command of its round alike
            for name, work in works.items():
                best[name] = min(best[name], best_seconds(work, 1))
    return best


def _rows(best: dict[str, float]) -> list[Row]:
    return [row(name, None, seconds, ANCHOR, best[ANCHOR], "s", ratio_of="resilient/anchor",
                target=f"<= {TARGET_S} s", met=seconds <= TARGET_S)
            for name, seconds in best.items() if name not in (ANCHOR, REFERENCE)]


def rows(repeats: int = 7) -> list[Row]:
    """The table's rows (without the reference), best of `repeats` alternating rounds."""
    return _rows(_best(repeats, reference=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds, best one counts (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, without the `import torch` reference")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    if repeats < 3:
        parser.error("--repeats must be at least 3")
    best = _best(repeats, reference=not args.quick)
    measured = _rows(best)
    anchor = best[ANCHOR]
    print(f"best of {repeats} alternating rounds; anchor `{ANCHOR}` = {anchor:.3f} s; target <= {TARGET_S} s\n")
    print("| command | seconds | ratio to anchor | <= 0.3 s |")
    print("|---|---:|---:|---|")
    print(f"| {ANCHOR} | {anchor:.3f} | 1.0x | - |")
    for each in measured:
        print(f"| {each['what']} | {each['resilient']:.3f} | {each['ratio']:.1f}x | {'yes' if each['met'] else 'NO'} |")
    if REFERENCE in best:
        print(f"| {REFERENCE} | {best[REFERENCE]:.3f} | {best[REFERENCE] / anchor:.1f}x | - |")
    if args.json:
        Path(args.json).write_text(json.dumps({"repeats": repeats, "anchor": ANCHOR, "anchor_s": anchor,
                                               "reference_s": best.get(REFERENCE), "rows": measured}, indent=2)
                                   + "\n")


if __name__ == "__main__":
    main()
