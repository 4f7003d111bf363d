"""How much does checksumming every checkpoint byte cost, next to writing it?

Hashes the same random buffer with xxh3-128 (what resilient uses), sha256 and crc32, then
writes it to a file and fsyncs it, the way a checkpoint is committed. xxh3 must be far faster
than the disk for "hash while writing" to be free. Run it on the filesystem your checkpoints
go to (``--dir``); /tmp is often RAM-backed, which would make the "disk" look like memory.

    python benchmarks/checksum.py --dir /scratch/$USER --size-mib 512

`rows()` returns xxh3's speed against each other one as data (`benchmarks/all.py` runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import zlib
from collections.abc import Callable

import xxhash
from _timing import Row, best_seconds, row

XXH3 = "xxh3_128 (xxhash)"


def _write_and_fsync(data: bytes, directory: str) -> float:
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".checksum-bench-") as f:
        start = time.perf_counter()
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return time.perf_counter() - start


def _speeds(size_mib: int, directory: str | os.PathLike[str], repeats: int) -> dict[str, float]:
    """GB/s of each hash (best of `repeats`) and of one write + fsync to `directory`."""
    data = os.urandom(size_mib * 1024 * 1024)
    gigabytes = len(data) / 1e9
    hashes: dict[str, Callable[[], object]] = {
        XXH3: lambda: xxhash.xxh3_128_hexdigest(data),
        "sha256 (hashlib)": lambda: hashlib.sha256(data).hexdigest(),
        "crc32 (zlib)": lambda: zlib.crc32(data),
    }
    speeds = {name: gigabytes / best_seconds(work, repeats) for name, work in hashes.items()}
    speeds[f"write + fsync ({os.path.abspath(directory)})"] = gigabytes / _write_and_fsync(data, directory)
    return speeds


def rows(size_mib: int, directory: str | os.PathLike[str], repeats: int = 3) -> list[Row]:
    """xxh3-128's speed against each other hash's and the disk's (ratio: xxh3 / anchor)."""
    speeds = _speeds(size_mib, directory, repeats)
    return [row("checksum speed (xxh3_128)", size_mib, speeds[XXH3], name, speed, "GB/s", ratio_of="resilient/anchor")
            for name, speed in speeds.items() if name != XXH3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512, help="buffer size in MiB (default 512)")
    parser.add_argument("--dir", default=".", help="directory for the write+fsync test (default: current directory)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per hash, best one counts (default 3)")
    args = parser.parse_args()
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    speeds = _speeds(args.size_mib, args.dir, args.repeats)
    disk = list(speeds.values())[-1]

    print(f"{args.size_mib} MiB of random bytes, hashes best of {args.repeats}, disk once\n")
    print("| operation | GB/s |")
    print("|---|---:|")
    for name, speed in speeds.items():
        print(f"| {name} | {speed:.2f} |")
    print(f"\nxxh3_128 / disk = {speeds[XXH3] / disk:.1f}x")


if __name__ == "__main__":
    main()
