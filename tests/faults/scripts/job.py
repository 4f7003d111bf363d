"""The training job the fault-injection suite kills, starves and signals, as a real process.

Its state says which step it belongs to (tests/faults/_payload.py), so the job itself can tell
whether what it resumed from is right, and the tests can check every checkpoint it leaves. It
prints one JSON line when it has resumed (`{"event": "resumed", ...}`), one per step (the
event a parent waits for before it kills or signals) and one when it is done.

Faults it can inject into itself, so that they land at an exact, replayable point:

- `--kill-op K`: SIGKILL just before the K-th file system change (rename, replace, link,
  symlink, unlink, rmdir, mkdir, fsync) counted from the start of the process, so the kill may
  land in the recovery at a restart, between the steps of a commit, in a top-k eviction or in
  the update of `last`;
- `--kill-byte B`: SIGKILL once B bytes of checkpoint files (any file in a checkpoint's
  temporary directory, however it was opened) have been written, after writing the part of the
  current write that reaches B, leaving a torn file;
- `--sigint-in-save`: send itself SIGINT as soon as an emergency checkpoint is being written.

A line `fault: ...` on stderr says where a self-inflicted kill landed.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
import signal
import sys
import time
import warnings

import torch
from torch import nn

import resilient
from tests.faults import _payload

_COUNTED_OPS = ("rename", "replace", "link", "symlink", "unlink", "rmdir", "mkdir", "fsync")


def _die(why: str) -> None:
    print(f"fault: SIGKILL {why}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


_done = {"ops": 0}  # file system changes so far; reported at the end, to size the next draws


def _kill_at_op(limit: int) -> None:
    def counted(name: str, real):  # type: ignore[no-untyped-def]
        def op(*args, **kwargs):  # type: ignore[no-untyped-def]
            _done["ops"] += 1
            if _done["ops"] == limit:
                _die(f"before file system change #{limit}: {name}{tuple(str(a) for a in args)}")
            return real(*args, **kwargs)

        return op

    for name in _COUNTED_OPS:
        setattr(os, name, counted(name, getattr(os, name)))


class _CountingFile:
    """A binary file being written into a checkpoint's temporary directory, killed at a byte count."""

    written = 0

    def __init__(self, file, limit: int, name: str) -> None:  # type: ignore[no-untyped-def]
        self._file, self._limit, self._name = file, limit, name

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        view = memoryview(data).cast("B")
        room = self._limit - _CountingFile.written
        if view.nbytes >= room:
            self._file.write(view[:room])
            self._file.flush()
            _die(f"after {self._limit} checkpoint bytes, {room} bytes into a write of {view.nbytes} to {self._name}")
        _CountingFile.written += view.nbytes
        return self._file.write(view)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._file, name)


def _kill_at_byte(limit: int) -> None:
    """Count what is written to files in a checkpoint's temporary directory, however they are opened."""
    real_open, real_fdopen = builtins.open, os.fdopen

    def counted(opened, mode: str, name: str):  # type: ignore[no-untyped-def]
        if "b" in mode and any(m in mode for m in "wxa+") and ".tmp-" in name:
            return _CountingFile(opened, limit, name)
        return opened

    def counting_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        return counted(real_open(file, mode, *args, **kwargs), mode, str(file))

    def counting_fdopen(fd, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        return counted(real_fdopen(fd, mode, *args, **kwargs), mode, os.readlink(f"/proc/self/fd/{fd}"))

    builtins.open = io.open = counting_open
    os.fdopen = counting_fdopen


def _sigint_when_saving() -> None:
    """The second SIGINT, sent from inside the emergency checkpoint's write, as it fsyncs its first
    file (before anything is committed): a thread watching for the temporary directory could see it
    only once the write had ended, and then the save might commit first."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.fsync is fsync and f"{os.sep}emergency{os.sep}" in path and ".tmp-" in path:
            os.fsync = real_fsync  # once
            print("fault: SIGINT while the emergency checkpoint is being written", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGINT)
        real_fsync(fd)

    os.fsync = fsync


def _rules(kind: str, dirpath: str | None, every: int) -> list[resilient.ModelCheckpoint]:
    periodic = resilient.ModelCheckpoint(dirpath=dirpath, every_n_train_steps=every, filename="{step}", save_top_k=1,
                                         save_last=True)
    if kind == "periodic":
        return [periodic]
    if kind == "keep":
        return [resilient.ModelCheckpoint(dirpath=dirpath, every_n_train_steps=every, filename="{step}", save_top_k=-1)]
    ranked = resilient.ModelCheckpoint(dirpath=dirpath, every_n_train_steps=every, monitor="score", mode="max",
                                       save_top_k=3, save_last="link", filename="{step}-{score:.3f}")
    if kind == "retention":
        return [ranked]
    if kind == "both":
        return [periodic, ranked]
    raise SystemExit(f"unknown --rules {kind!r}")


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--dirpath", default=None, help="where the rules write (default: <run-dir>/checkpoints)")
    parser.add_argument("--kib", type=int, default=64, help="size of the model's state")
    parser.add_argument("--grow-kib", type=int, default=0, help="per-rank state added at every step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rules", default="periodic", help="periodic, keep, retention or both")
    parser.add_argument("--every", type=int, default=1, help="steps between rule saves")
    parser.add_argument("--step-seconds", type=float, default=0.0, help="simulated compute per step")
    parser.add_argument("--kill-op", type=int, default=None)
    parser.add_argument("--kill-byte", type=int, default=None)
    parser.add_argument("--sigint-in-save", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="resume, report and stop")
    parser.add_argument("--and-run-dir", action="append", default=[],
                        help="with --report-only: the same for this run directory too (one torch import for many)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="range cannot resume mid-epoch")  # by design: it is fast-forwarded

    if args.kill_op is not None:
        _kill_at_op(args.kill_op)
    if args.kill_byte is not None:
        _kill_at_byte(args.kill_byte)
    if args.report_only:
        for run_dir in (args.run_dir, *args.and_run_dir):
            _train(args, run_dir)
    else:
        _train(args, args.run_dir)


def _train(args: argparse.Namespace, run_dir: str) -> None:
    model = nn.ParameterList([nn.Parameter(t, requires_grad=False) for t in _payload.model_at(args.kib, 0)])
    grown = _payload.Grown(args.grow_kib)
    with resilient.Run(checkpoint=_rules(args.rules, args.dirpath, args.every), run_dir=run_dir) as run:
        if args.sigint_in_save:
            _sigint_when_saving()
        run.track(model=model, grown=grown)
        problem = _payload.model_problem(list(model), args.kib, run.step) or grown.problem
        _say(event="resumed", run_dir=run_dir, checkpoint=run.resumed_from, step=run.step, problem=problem)
        if args.report_only:
            return
        for _ in run.batches(range(args.steps)):
            _say(event="step", step=run.step)
            time.sleep(args.step_seconds)
            with torch.no_grad():
                for tensor in model:
                    tensor.add_(1.0)
            grown.step += 1
            run.log("score", _payload.score(grown.step))
        _say(event="done", step=run.step, problem=_payload.model_problem(list(model), args.kib, run.step),
             ops=_done["ops"], bytes=_CountingFile.written)


if __name__ == "__main__":
    main()
