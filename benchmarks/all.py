"""Every benchmark in one command: one table, and all its rows in one JSON file.

Each row is resilient's value measured side by side with its anchor in the same run (torch.save
and torch.load, raw bytes + fdatasync, DCP's save and async_save, DCP's sharded save and load
on two ranks, the plain loop, `python -c pass`, a hand-written signal handler...), their ratio,
and the target of issue 9 (or 10, for sharded state) where it sets one.
The rows that depend on the state's size are measured for each of ``--sizes-mib``; the step
overhead (one process, and two ranks on gloo with 10 ms steps) and the commands' startup once.
A line about the machine comes first: CPUs, their model, the load average before and after,
torch's version and the filesystem of ``--dir``.

    python benchmarks/all.py --sizes-mib 256 1024 --dir /scratch/$USER --json results.json
    python benchmarks/all.py --sizes-mib 2 --quick --json results.json   # tiny: proves it works (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import async_stall
import checkpoint_io
import checksum
import cli_startup
import save_cost
import sharded_io
import step_overhead
import stop_to_exit
import torch
from _timing import Row


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")


def _filesystem(directory: str) -> str:
    """The type and device of the mount holding `directory` (the longest mount point above it)."""
    path = os.path.realpath(directory)
    best = ("", "unknown", "unknown")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, point, kind = line.split()[:3]
            point = point.replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best[0]):
                best = (point, kind, device)
    return f"{best[1]} ({best[2]} on {best[0]})"


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def measure(sizes_mib: list[int], directory: str, quick: bool) -> list[Row]:
    """Every benchmark's rows: those of each state size, then the step overhead and startup."""
    repeats = 1 if quick else 3
    rows = []
    for size in sizes_mib:
        rows += checkpoint_io.rows(size, directory, repeats, count=10 if quick else 1000)
        rows += save_cost.rows(size, directory, repeats)
        rows += checksum.rows(size, directory, repeats)
        kinds = async_stall.STEP_KINDS if size == min(sizes_mib) else ("device",)  # CPU steps: one size is enough
        rows += async_stall.async_stall_rows(size * 2**20, directory, repeats=repeats, kinds=kinds,
                                             **({"step_ms": 10.0, "every": 3, "saves": 2} if quick else {"saves": 3}))
        rows += stop_to_exit.rows(size, directory, repeats)
        rows += sharded_io.rows(size, directory, 1 if quick else sharded_io.REPEATS)  # two ranks: more noise
    rows += step_overhead.rows(quick)
    rows += cli_startup.rows(repeats=1 if quick else 7)
    return rows


def _value(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.4g} {unit}"


def print_table(rows: list[Row], machine: dict[str, object]) -> None:
    print("machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()) + "\n")
    print("| what | size | resilient | anchor | ratio | target | met? |\n|---|---:|---:|---|---:|---|---|")
    for each in rows:
        size = "-" if each["size_mib"] is None else f"{each['size_mib']:.0f} MiB"
        ours = each["note"] or _value(each["resilient"], each["unit"])
        ratio = "-" if each["ratio"] is None else f"{each['ratio']:.3g}x ({each['ratio_of']})"
        met = {None: "-", True: "yes", False: "NO"}[each["met"]]
        print(f"| {each['what']} | {size} | {ours} | {each['anchor']}: {_value(each['anchor_value'], each['unit'])} "
              f"| {ratio} | {each['target'] or '-'} | {met} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024], help="state sizes (default 256 1024)")
    parser.add_argument("--dir", default=".", help="directory on the filesystem checkpoints go to")
    parser.add_argument("--quick", action="store_true", help="one round of each, fewest steps: seconds, not hours")
    parser.add_argument("--json", type=Path, help="also write the machine and the rows here")
    args = parser.parse_args()
    if min(args.sizes_mib) < 1:
        parser.error("--sizes-mib must be at least 1")
    load_before = _load()
    rows = measure(args.sizes_mib, args.dir, args.quick)
    machine = {"cpus": os.cpu_count(), "model": _cpu_model(), "load average before": load_before,
               "after": _load(), "torch": torch.__version__, "python": platform.python_version(),
               "filesystem of --dir": _filesystem(args.dir)}
    print_table(rows, machine)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "quick": args.quick, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
