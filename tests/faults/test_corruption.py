"""Every kind of damage a checkpoint directory can suffer, on a real run, through real processes.

A job writes checkpoints at steps 1 to 4; each case damages the newest one (or adds a hostile
entry beside it), then a restart must resume from the newest checkpoint still valid, with a
warning that names the bad entry, and `resilient checkpoints DIR --verify` must exit 1 naming
it. Both run as processes with a bound, so a hang (a symlink loop, a FIFO, a manifest that
names /dev/zero) fails instead of blocking the suite, and with a memory limit, so one that
reads without end fails instead of exhausting the machine. The restarts of all cases run one
after another in one process (each a `Run` of its own run directory), which imports torch once
instead of once per case.

Forged manifests are re-signed the way the format documents it (an envelope whose checksum is
the xxh3-128 of the canonical JSON of the inner manifest), as a hostile or buggy writer would.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import xxhash

from ._faults import ENV, TALLY, Child, job_command

KIB = 64
STEPS = 4
HANG_S = 60  # a restart or a listing takes about a second; generous, for a machine shared with other runs
MEMORY_LIMIT = 2 << 30  # address space: reading /dev/zero whole fails fast instead of eating the machine


@dataclass(frozen=True)
class Case:
    damage: Callable[[Path, Path], None]  # (the newest checkpoint, the checkpoint directory)
    bad: str = f"step={STEPS}.ckpt"  # the entry the warning and the listing must name
    resume_step: int = STEPS - 1  # where the restart must resume


def _truncate(name: str, keep: Callable[[int], int]) -> Callable[[Path, Path], None]:
    def damage(newest: Path, _: Path) -> None:
        data = (newest / name).read_bytes()
        (newest / name).write_bytes(data[: keep(len(data))])

    return damage


def _flip(name: str) -> Callable[[Path, Path], None]:
    def damage(newest: Path, _: Path) -> None:
        data = bytearray((newest / name).read_bytes())
        data[len(data) // 2] ^= 0x10
        (newest / name).write_bytes(bytes(data))

    return damage


def _forge(change: Callable[[dict, Path], None]) -> Callable[[Path, Path], None]:
    """Edit the newest checkpoint's inner manifest, then re-sign it so that its own checksum holds."""

    def damage(newest: Path, _: Path) -> None:
        inner = json.loads((newest / "MANIFEST.json").read_bytes())["manifest"]
        change(inner, newest)
        checksum = xxhash.xxh3_128_hexdigest(json.dumps(inner, sort_keys=True).encode())
        text = json.dumps({"manifest": inner, "checksum": checksum}, indent=2) + "\n"
        (newest / "MANIFEST.json").write_text(text)

    return damage


def _swap_checksums(inner: dict, _: Path) -> None:
    files = inner["files"]
    files["state.pt"]["checksum"], files["rank-00000.pt"]["checksum"] = (
        files["rank-00000.pt"]["checksum"], files["state.pt"]["checksum"])


def _future_version(inner: dict, _: Path) -> None:
    inner["format_version"] += 1


def _name_dev_zero(inner: dict, _: Path) -> None:
    inner["files"]["/dev/zero"] = {"size": 0, "checksum": xxhash.xxh3_128_hexdigest(b"")}


def _name_secret(inner: dict, newest: Path) -> None:
    secret = newest.parent.parent / "secret.txt"  # ../../secret.txt seen from the checkpoint
    secret.write_bytes(b"the password is swordfish\n")
    inner["files"]["../../secret.txt"] = {"size": secret.stat().st_size,
                                          "checksum": xxhash.xxh3_128_hexdigest(secret.read_bytes())}


def _replace_with(make: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    """The newest checkpoint's name becomes some other kind of entry."""

    def damage(newest: Path, directory: Path) -> None:
        shutil.rmtree(newest)
        make(newest, directory)

    return damage


def _plain_file(entry: Path, _: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(3)}}, entry)  # a single-file checkpoint, as Lightning writes


def _link_to_file(entry: Path, directory: Path) -> None:
    (directory / "notes.txt").write_text("not a checkpoint\n")
    entry.symlink_to("notes.txt")


def _manifest_fifo(newest: Path, _: Path) -> None:
    (newest / "MANIFEST.json").unlink()
    os.mkfifo(newest / "MANIFEST.json")  # opening it for reading blocks until a writer comes


def _manifest_to_dev_zero(newest: Path, _: Path) -> None:
    (newest / "MANIFEST.json").unlink()
    (newest / "MANIFEST.json").symlink_to("/dev/zero")  # reads never end


def _loop_beside(_: Path, directory: Path) -> None:
    (directory / "x.ckpt").symlink_to("x.ckpt")


CASES = {
    "truncated state": Case(_truncate("state.pt", lambda n: n // 2)),
    "truncated rank file": Case(_truncate("rank-00000.pt", lambda n: n - 1)),
    "truncated manifest": Case(_truncate("MANIFEST.json", lambda n: n // 2)),
    "bit flip in state": Case(_flip("state.pt")),
    "bit flip in rank file": Case(_flip("rank-00000.pt")),
    "bit flip in manifest": Case(_flip("MANIFEST.json")),
    "swapped checksums": Case(_forge(_swap_checksums)),
    "future format version": Case(_forge(_future_version)),
    "missing manifest": Case(lambda newest, _: (newest / "MANIFEST.json").unlink()),
    "missing rank file": Case(lambda newest, _: (newest / "rank-00000.pt").unlink()),
    "manifest names /dev/zero": Case(_forge(_name_dev_zero)),
    "manifest names ../../secret.txt": Case(_forge(_name_secret)),
    "manifest is a fifo": Case(_manifest_fifo),
    "manifest links to /dev/zero": Case(_manifest_to_dev_zero),
    "symlink loop x.ckpt": Case(_loop_beside, bad="x.ckpt", resume_step=STEPS),
    "symlink loop in place": Case(_replace_with(lambda entry, _: entry.symlink_to(entry.name))),
    "plain file": Case(_replace_with(_plain_file)),
    "dangling link": Case(_replace_with(lambda entry, _: entry.symlink_to("gone.ckpt"))),
    "link to a file": Case(_replace_with(_link_to_file)),
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _bounded(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=HANG_S, check=False,
                              preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(command, None, error.stdout or "", f"HUNG: no exit within {HANG_S} s")


@dataclass
class Outcome:
    run_dir: Path
    restart: subprocess.CompletedProcess[str]  # all cases' restarts, one after another
    listing: subprocess.CompletedProcess[str]


def _damaged_copy(name: str, base: Path) -> Path:
    run_dir = base.parent / name.replace(" ", "-").replace("/", "_")
    shutil.copytree(base, run_dir, symlinks=True)
    directory = run_dir / "checkpoints"
    CASES[name].damage(directory / f"step={STEPS}.ckpt", directory)
    TALLY.add(fault="corruptions")
    return run_dir


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """One real run, copied and damaged once per case; the restarts in one process, beside which
    every case's listing runs as its own process."""
    base = tmp_path_factory.mktemp("corruption") / "base"
    child = Child(job_command(base, kib=KIB, steps=STEPS, rules="keep"))
    assert child.finish() == 0, child.stderr
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == [f"step={s}.ckpt" for s in range(1, STEPS + 1)]
    run_dirs = [_damaged_copy(name, base) for name in CASES]
    restart = job_command(run_dirs[0], kib=KIB, steps=STEPS, rules="keep", report_only=True)
    restart += [argument for run_dir in run_dirs[1:] for argument in ("--and-run-dir", str(run_dir))]
    listings = [[sys.executable, "-m", "resilient", "checkpoints", str(run_dir / "checkpoints"), "--verify"]
                for run_dir in run_dirs]
    with ThreadPoolExecutor(2) as pool:
        restarted = pool.submit(_bounded, restart)
        listed = list(pool.map(_bounded, listings))
        return {name: Outcome(run_dir, restarted.result(), listing)
                for name, run_dir, listing in zip(CASES, run_dirs, listed)}


@pytest.mark.parametrize("name", CASES)
def test_a_restart_skips_the_damaged_checkpoint_with_a_warning_naming_it(name: str,
                                                                         outcomes: dict[str, Outcome]) -> None:
    case, outcome = CASES[name], outcomes[name]
    restart = outcome.restart
    reports = [json.loads(line) for line in restart.stdout.splitlines() if line.startswith("{")]
    report = next((report for report in reports if report["run_dir"] == str(outcome.run_dir)), None)
    assert report is not None, f"no restart of {outcome.run_dir} (exit {restart.returncode}):\n{restart.stderr[-3000:]}"
    assert restart.returncode == 0, restart.stderr[-3000:]
    if report["problem"]:
        TALLY.add(bad_loads=1)
    assert report["problem"] is None, f"BAD LOAD from {report['checkpoint']}: {report['problem']}"
    expected = next((outcome.run_dir / "checkpoints").glob(f"step={case.resume_step}.ckpt"))
    assert (report["step"], report["checkpoint"]) == (case.resume_step, str(expected)), restart.stderr[-3000:]
    bad = str(outcome.run_dir / "checkpoints" / case.bad)
    warnings = [line for line in restart.stderr.splitlines() if "Warning" in line and bad in line]
    assert warnings, f"no warning naming {bad}:\n{restart.stderr[-3000:]}"


@pytest.mark.parametrize("name", CASES)
def test_verify_exits_1_naming_the_damaged_checkpoint(name: str, outcomes: dict[str, Outcome]) -> None:
    listing = outcomes[name].listing
    assert listing.returncode == 1, (listing.returncode, listing.stdout[-3000:], listing.stderr[-3000:])
    assert "Traceback" not in listing.stderr, listing.stderr[-3000:]
    rows = [line for line in listing.stdout.splitlines() if line.startswith(CASES[name].bad)]
    assert rows and all(" NO" in row for row in rows), listing.stdout
    valid = [line for line in listing.stdout.splitlines() if line.startswith("step=") and "yes" in line]
    assert len(valid) == STEPS - (CASES[name].bad != "x.ckpt"), listing.stdout
