"""What do resilient's checkpoint reads and writes cost next to the plain torch calls?

One table, every row measured side by side with its anchor in the same run, alternating the
two, best of ``--repeats``; the result is the RATIO anchor time / resilient time (above 1:
resilient is faster), set against the target of issue 9:

- save: `write_checkpoint` (temporary directory, xxh3 of every byte, fsyncs, manifest, atomic
  rename) vs ``torch.save`` + fsync (target >= 1.1x), and vs writing the tensors' raw bytes +
  fdatasync, the floor for any format (target >= 0.95x), and vs PyTorch's distributed checkpoint
  (``torch.distributed.checkpoint.save``, one process, no process group; no target);
- resume: `load_checkpoint` + ``load_state_dict`` of a model and its AdamW vs ``torch.load`` +
  the same, warm (in the page cache) and cold (the files' pages evicted with
  ``posix_fadvise(DONTNEED)``, which needs no root and leaves the rest of the machine alone)
  (target >= 0.9x);
- peak memory of a resume over the state's size, each in a fresh process: peak RSS (VmHWM,
  getrusage's maxrss without the parent's peak a fork passes on, reset once the model and its
  optimizer state exist) minus the RSS then: a `Run`'s resume (``run.track``, target <= 0.1x),
  `load_checkpoint` alone, whose tensors stay memory-mapped until used (target <= 0.1x), and
  `load_checkpoint` + the user's own ``load_state_dict``, whose copy leaves the pages it read
  resident (no target: the user's code holds the loaded state);
- discovery: the newest valid checkpoint among ``--count`` (``next(newest_checkpoints())``) vs
  scandir + ``json.loads`` of every manifest (target >= 1x, and sub-linear: also at a tenth).

Run it on the filesystem checkpoints go to (``--dir``; /tmp is often RAM):

    python benchmarks/checkpoint_io.py --dir /scratch/$USER --size-mib 1024 --json io.json
    python benchmarks/checkpoint_io.py --size-mib 2 --count 20     # seconds: does it work?

`rows()` returns the same rows as data (`benchmarks/all.py` runs it with the other benchmarks).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from _timing import Row, alternating_best, evict, removing, row
from torch import nn

import resilient
from resilient.checkpoint import MANIFEST_NAME, newest_checkpoints, write_checkpoint

# DCP warns at every call that it saves in one process and overwrites: known here, noise in a table
warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.distributed\.checkpoint")
_WIDTH = 2048  # a 16 MiB float32 weight per layer at full size
_RESUME = "resume (Run.track)"


def model_and_optimizer(size_bytes: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A model and an AdamW whose state (weights, exp_avg, exp_avg_sq) is about `size_bytes`."""
    width = min(_WIDTH, max(8, int(math.sqrt(size_bytes / 12))))
    layers = max(1, round(size_bytes / 12 / width**2))
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])
    optimizer = torch.optim.AdamW(model.parameters(), foreach=False)  # per-layer temporaries only
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    return model, optimizer


def state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, object]:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    tensors = [p.detach() for p in model.parameters()]
    for state in optimizer.state.values():
        tensors += [value for value in state.values() if isinstance(value, torch.Tensor) and value.dim()]
    return tensors


def _side_by_side(works: list[Callable[[], object]], repeats: int,
                  before: Callable[[], None] = lambda: None) -> list[float]:
    """Best seconds of each, alternating; garbage collected between works, out of the timing."""
    def prepare() -> None:
        gc.collect()
        before()
    return alternating_best(works, repeats, before=prepare)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _resident() -> int:
    return _status_kib("VmRSS") * 1024


def _reset_peak() -> None:
    """Start the peak afresh at the current RSS, so the set-up's own peak does not count."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _peak() -> int:
    """Peak RSS of this process: VmHWM, what getrusage's maxrss reports without the parent's
    peak that a fork passes on to maxrss (and with the reset above)."""
    return max(_status_kib("VmHWM") * 1024, _resident())


def _rss_child(args: argparse.Namespace) -> None:
    """In a fresh process: peak RSS of one resume over the RSS before it, as a fraction of the state."""
    model, optimizer = model_and_optimizer(args.size_mib * 2**20)
    state_bytes = sum(t.nbytes for t in state_tensors(model, optimizer))
    gc.collect()
    baseline = _resident()
    _reset_peak()
    if args.rss_child == _RESUME:
        rule = resilient.ModelCheckpoint(dirpath=Path(args.path).parent, every_n_train_steps=10**9)
        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as run_dir, \
                resilient.Run(checkpoint=rule, run_dir=run_dir) as run:
            warnings.simplefilter("ignore")  # the rule that wrote it is not this one: said once, not news here
            run.track(model=model, optimizer=optimizer)
            peak = _peak()
    else:
        loaded = torch.load(args.path, map_location="cpu") if args.rss_child == "torch.load" else \
            resilient.load_checkpoint(args.path)
        if args.rss_child != "load_checkpoint alone":
            model.load_state_dict(loaded["model"])
            optimizer.load_state_dict(loaded["optimizer"])
        peak = _peak()
    print(json.dumps({"over_state": max(0, peak - baseline) / state_bytes}))


def _peak_rss(kinds: dict[str, Path], size_mib: int) -> dict[str, float]:
    """Each kind's peak RSS over the state, each in its own process, all at once: memory, not time,
    is measured, so they need not take turns."""
    children = {kind: subprocess.Popen([sys.executable, __file__, "--rss-child", kind, "--path", str(path),
                                        "--size-mib", str(size_mib)], stdout=subprocess.PIPE, text=True)
                for kind, path in kinds.items()}
    outputs = {kind: child.communicate()[0] for kind, child in children.items()}
    if any(child.returncode for child in children.values()):
        raise RuntimeError(f"a peak RSS child failed: {[child.returncode for child in children.values()]}")
    return {kind: json.loads(output.splitlines()[-1])["over_state"] for kind, output in outputs.items()}


def _every_manifest(directory: Path) -> list[dict[str, object]]:
    """The anchor for discovery: read and parse every manifest, no authentication."""
    manifests = []
    for entry in os.scandir(directory):
        if entry.name.endswith(".ckpt"):
            with open(os.path.join(entry.path, MANIFEST_NAME), "rb") as f:
                manifests.append(json.loads(f.read()))
    return manifests


def _discovery(work: Path, count: int, repeats: int) -> list[dict[str, object]]:
    rows = []
    for n in (max(1, count // 10), count):
        directory = work / f"discovery-{n}"
        for step in range(n):
            write_checkpoint([(directory / f"step={step}.ckpt", "bench")], {"state.pt": {"x": torch.zeros(1)}},
                             step=step, epoch=0, metrics={"loss": 1.0 / (step + 1)}, world_size=1)
        ours, anchor = _side_by_side([lambda d=directory: next(newest_checkpoints([d])),
                                      lambda d=directory: _every_manifest(d)], repeats)
        rows.append(_row(f"latest valid among {n} checkpoints", None, ours, anchor, "scandir + json of every manifest",
                         1.0))
    return rows


def _row(what: str, size_mib: float | None, ours: float, anchor: float, anchor_name: str,
         target: float | None) -> Row:
    return row(what, size_mib, ours, anchor_name, anchor, "s", ratio_of="anchor/resilient", at_least=target)


def _fsynced_torch_save(state: object, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def dcp_save(state: dict[str, object], path: Path) -> None:
    """PyTorch's distributed checkpoint of `state`, in this one process (no process group)."""
    import torch.distributed.checkpoint as dcp  # seconds to import: not in the peak RSS children

    dcp.save(state, checkpoint_id=path, no_dist=True)


def _raw_bytes(tensors: list[torch.Tensor], path: Path) -> None:
    with open(path, "wb", buffering=0) as f:
        for tensor in tensors:
            view = memoryview(tensor.numpy()).cast("B")
            written = 0
            while written < view.nbytes:
                written += f.write(view[written:])
        os.fdatasync(f.fileno())


def _save_and_resume(size_mib: int, work: Path, repeats: int) -> tuple[float, list[Row]]:
    """The state's MiB, and the rows of saving and resuming it (the model is freed on return)."""
    model, optimizer = model_and_optimizer(size_mib * 2**20)
    state = state_dict(model, optimizer)
    tensors = state_tensors(model, optimizer)
    state_mib = sum(t.nbytes for t in tensors) / 2**20
    plain, raw, ours, distributed = work / "plain.pt", work / "raw.bin", work / "ckpts/resilient.ckpt", work / "dcp"

    def resilient_save() -> None:
        write_checkpoint([(ours, "bench")], {"state.pt": state}, step=0, epoch=0, metrics={}, world_size=1)

    ours_s, torch_s, raw_s, dcp_s = _side_by_side(
        [resilient_save, lambda: _fsynced_torch_save(state, plain), lambda: _raw_bytes(tensors, raw),
         lambda: dcp_save(state, distributed)], repeats, before=removing(plain, raw, ours, distributed))
    rows = [_row("save", state_mib, ours_s, torch_s, "torch.save + fsync", 1.1),
            _row("save", state_mib, ours_s, raw_s, "raw tensor bytes + fdatasync", 0.95),
            _row("save", state_mib, ours_s, dcp_s, "DCP save (torch.distributed.checkpoint)", None)]

    shutil.rmtree(ours, ignore_errors=True)  # the last round's, if a later work did not remove it
    with resilient.Run(checkpoint=[], run_dir=work / "run", resume=False) as run:
        run.track(model=model, optimizer=optimizer)
        run.save_checkpoint(ours)
    _fsynced_torch_save(state, plain)

    def resilient_resume() -> None:
        loaded = resilient.load_checkpoint(ours)
        model.load_state_dict(loaded["model"])
        optimizer.load_state_dict(loaded["optimizer"])

    def torch_resume() -> None:
        loaded = torch.load(plain, map_location="cpu")
        model.load_state_dict(loaded["model"])
        optimizer.load_state_dict(loaded["optimizer"])

    resume_anchor = "torch.load + load_state_dict"
    seconds = _side_by_side([resilient_resume, torch_resume], repeats)
    rows.append(_row("resume, warm", state_mib, *seconds, resume_anchor, 0.9))
    seconds = _side_by_side([resilient_resume, torch_resume], repeats, before=lambda: evict([ours, plain]))
    rows.append(_row("resume, cold (pages evicted)", state_mib, *seconds, resume_anchor, 0.9))
    return state_mib, rows


def _measure(size_mib: int, work: Path, repeats: int, count: int) -> dict[str, object]:
    state_mib, rows = _save_and_resume(size_mib, work, repeats)
    gc.collect()
    ours, plain = work / "ckpts/resilient.ckpt", work / "plain.pt"
    kinds = (_RESUME, "load_checkpoint + load_state_dict", "load_checkpoint alone")
    memory = _peak_rss({**dict.fromkeys(kinds, ours), "torch.load": plain}, size_mib)
    for kind in kinds:
        target = kind != "load_checkpoint + load_state_dict"  # the user's own copy keeps what it touched
        rows.append(row(f"peak RSS of a resume over the state: {kind}", state_mib, memory[kind],
                        "torch.load + load_state_dict", memory["torch.load"], "x state", ratio_of="anchor/resilient",
                        target="peak <= 0.1x state" if target else None, met=memory[kind] <= 0.1 if target else None))
    rows += _discovery(work, count, repeats)
    return {"state_mib": state_mib, "rows": rows, "peak_rss_over_state": memory}


def rows(size_mib: int, directory: str | os.PathLike[str], repeats: int = 3, count: int = 1000) -> list[Row]:
    """The table's rows for a state of `size_mib`, checkpoints written under `directory`."""
    return _run(size_mib, directory, repeats, count)["rows"]  # type: ignore[return-value]


def _run(size_mib: int, directory: str | os.PathLike[str], repeats: int, count: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="checkpoint-io-", dir=directory))
    try:
        return _measure(size_mib, work, repeats, count)
    finally:
        shutil.rmtree(work)


def _print(result: dict[str, object], args: argparse.Namespace) -> None:
    print(f"state: {result['state_mib']:.0f} MiB (model + AdamW), directory {os.path.abspath(args.dir)}, "
          f"best of {args.repeats}, {os.cpu_count()} CPUs, {platform.platform()}\n")
    print("| what | resilient | anchor | anchor's | ratio (anchor/resilient) | target | met |")
    print("|---|---:|---|---:|---:|---|---|")
    for each in result["rows"]:  # type: ignore[attr-defined]
        met = {None: "-", True: "yes", False: "NO"}[each["met"]]
        print(f"| {each['what']} | {each['resilient']:.4f} {each['unit']} | {each['anchor']} | "
              f"{each['anchor_value']:.4f} {each['unit']} | {each['ratio']:.2f}x | {each['target'] or '-'} | {met} |")
    print("\n| resume | peak RSS over the state size |\n|---|---:|")
    for kind, fraction in result["peak_rss_over_state"].items():  # type: ignore[attr-defined]
        print(f"| {kind} | {fraction:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".", help="directory on the filesystem checkpoints go to")
    parser.add_argument("--size-mib", type=int, default=256, help="model + AdamW state size (default 256)")
    parser.add_argument("--count", type=int, default=1000, help="checkpoints for discovery (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, best counts (default 3)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(args)
        return
    if args.size_mib < 1 or args.count < 1 or args.repeats < 1:
        parser.error("--size-mib, --count and --repeats must be at least 1")
    result = _run(args.size_mib, args.dir, args.repeats, args.count)
    result.update(size_mib=args.size_mib, repeats=args.repeats, machine=platform.platform(), cpus=os.cpu_count())
    _print(result, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
