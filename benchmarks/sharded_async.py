"""Async sharded saves: DCP's `async_save` against our writer over DCP's `save`, on the same state.

Why it exists: an asynchronous sharded save can be built two ways (issue 10), and the choice
should rest on numbers, not taste. Two ranks on gloo train an FSDP2 stack of linear layers with
AdamW (``--size-mib`` of parameters in all, three times that with the optimizer's moments), and
save every rank's shards into a fresh directory, alternating the two ways, each ``--saves`` times:

- ``dcp.async_save``: ``async_save(state, storage_writer=FileSystemWriter(..., sync_files=True,
  cache_staged_state_dict=CUDA?), process_group=side)``: DCP copies the state into CPU buffers
  (kept from save to save, the writer reused, only with CUDA: DCP pins its cached buffers, and
  pinning fails on a machine without an accelerator, so there it allocates them at every save)
  and runs ``save`` in a thread of its own; then, as a commit needs, the rank checksums its files
  and hands their entries to rank 0 on the side group.
- ``resilient``: `split_dtensors` + `Stager.stage` copy each rank's local shards into reused
  buffers, and a thread runs ``dcp.save`` of the copy on the side group, checksums and hands over
  the entries (what `Run` does, `loop/_saving.py`).

Reported per way, the median over the saves: the stall (how long the training thread is blocked
by the call that starts the save) and the total (from that call to rank 0 holding every rank's
entries, ready to commit). The training thread waits for each save before the next step.

    python benchmarks/sharded_async.py --size-mib 96 --saves 5 --dir /tmp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _rank_main(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.fsdp import fully_shard

    from resilient.checkpoint import Stager, shard_entries, split_dtensors, write_shards

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    side = dist.new_group(backend="gloo")
    width = 1024
    layers = max(1, args.size_mib * 2**20 // (width * width * 4))
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        model(torch.randn(4, width)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    def state() -> dict[str, Any]:
        weights, moments = get_state_dict(model, optimizer)
        return {"model": weights, "optimizer": moments}

    def gather(entries: object) -> None:
        dist.gather_object(entries, [None] * dist.get_world_size() if rank == 0 else None, dst=0, group=side)

    # DCP's cached staging pins its buffers, which fails without CUDA: then it allocates per save.
    writer = dcp.FileSystemWriter(args.dir, sync_files=True, cache_staged_state_dict=torch.cuda.is_available())
    stager = Stager()

    def with_async_save(directory: Path) -> tuple[float, float]:
        started = time.perf_counter()
        future = dcp.async_save(state(), checkpoint_id=directory, storage_writer=writer, process_group=side)
        stall = time.perf_counter() - started
        gather(shard_entries(future.result(), directory, rank)[0])
        return stall, time.perf_counter() - started

    def with_our_writer(directory: Path) -> tuple[float, float]:
        started = time.perf_counter()
        plain, join = split_dtensors(state())
        staged = stager.stage(plain)
        stall = time.perf_counter() - started

        def write() -> None:
            gather(write_shards(join(staged.state), directory, rank, side)[0])

        thread = threading.Thread(target=write)
        thread.start()
        thread.join()
        return stall, time.perf_counter() - started

    step()
    ways = {"dcp.async_save": with_async_save, "resilient": with_our_writer}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for index in range(args.saves + 1):  # the first of each way makes its buffers: not counted
        for name, save in ways.items():
            directory = Path(args.dir) / f"{name}-{index}"
            if rank == 0:
                directory.mkdir()
            dist.barrier()
            measured = save(directory)
            if index:
                times[name].append(measured)
            dist.barrier()
            if rank == 0:
                shutil.rmtree(directory)
            step()
    if rank == 0:
        print(json.dumps({name: {"stall_s": statistics.median(s for s, _ in runs),
                                 "total_s": statistics.median(t for _, t in runs)} for name, runs in times.items()}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=96, help="parameters, in all (the optimizer adds twice that)")
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the checkpoints are written")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank:
        _rank_main(args)
        return
    work = Path(tempfile.mkdtemp(prefix="sharded-async-", dir=args.dir))
    try:
        command = [sys.executable, __file__, "--rank", "--size-mib", str(args.size_mib), "--saves", str(args.saves),
                   "--dir", str(work)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                   WORLD_SIZE="2", OMP_NUM_THREADS="1")
        procs = [subprocess.Popen(command, env=dict(env, RANK=str(rank)), stdout=subprocess.PIPE, text=True)
                 for rank in range(2)]
        outputs = [proc.communicate()[0] for proc in procs]
        if any(proc.returncode for proc in procs):
            raise SystemExit("a rank failed")
        result = json.loads(outputs[0])
        print(f"{'2 ranks, gloo':<16} {'stall per save':>16} {'total per save':>16}")
        for name, row in result.items():
            print(f"{name:<16} {row['stall_s'] * 1e3:>13.1f} ms {row['total_s'] * 1e3:>13.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
