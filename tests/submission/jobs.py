"""Training jobs submitted by the tests, through `@resilient.job` (importable by submitit's tasks).

`gate_steps` make every rank wait at those steps until the test says go, or until a stop signal
reaches any rank: the test can make the cluster signal the job at a known step, and the stop
happens at a step it can predict, without racing the job. `step_seconds` stands in for compute,
for tests that need a job to run into its time limit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import resilient


def wait_for_gate(run: resilient.Run, gate_dir: Path) -> None:
    """Say 'ready-N', then wait for 'go-N' from the test, or for a signal to any rank (which says go)."""
    ready, go = gate_dir / f"ready-{run.step}", gate_dir / f"go-{run.step}"
    if run.rank == 0:
        ready.touch()
    while not go.exists():
        if run._signals.received:  # the test peeks at the recorder: a stop signal has arrived here
            go.touch()
        time.sleep(0.01)


def train_model(run: resilient.Run, out: str, epochs: int = 3, gate_steps: tuple[int, ...] = (),
                gate_dir: str | None = None, fail_at_step: int | None = None,
                step_seconds: float = 0.0, log_dir: str | None = None,
                fresh_start_fails_at: int | None = None) -> dict[str, int]:
    """`log_dir`: rank 0 logs each step's loss to W&B (offline, there) and TensorBoard (under
    it, in the run's TensorBoard version); `fresh_start_fails_at`: crash at that step, but
    only in a start that resumed from nothing."""
    data = torch.Generator().manual_seed(1234)
    inputs = torch.randn(128, 8, generator=data)
    dataset = TensorDataset(inputs, (inputs.sum(dim=1) > 0).long())
    torch.manual_seed(100 + run.rank)
    model: nn.Module = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
    if run.world_size > 1:
        model = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = resilient.ResumableSampler(dataset, seed=7)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler)
    run.track(model=model, optimizer=optimizer)
    log = _loggers(run, Path(log_dir)) if log_dir is not None and run.rank == 0 else None
    for _ in run.epochs(epochs):
        for x, y in run.batches(loader):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if log is not None:
                log(run.step, loss.item())
            time.sleep(step_seconds)
            if run.step == fresh_start_fails_at and run.resumed_from is None:
                raise RuntimeError(f"boom at step {run.step} of a fresh start")
            if run.step in gate_steps and gate_dir is not None:
                wait_for_gate(run, Path(gate_dir))
            if run.step == fail_at_step:
                raise RuntimeError(f"boom at step {run.step}")
    if run.rank == 0:
        weights = model.module.state_dict() if run.world_size > 1 else model.state_dict()
        torch.save(weights, out)
    return {"step": run.step, "world_size": run.world_size}


def _loggers(run: resilient.Run, log_dir: Path) -> Callable[[int, float], None]:
    """W&B (offline, its run named by the environment the job set) and TensorBoard, each step."""
    import wandb
    from torch.utils.tensorboard import SummaryWriter

    experiment = wandb.init(project="resilient-tests", dir=log_dir, mode="offline")
    board = SummaryWriter(log_dir / "tensorboard" / run.tracker_id("tensorboard"), purge_step=run.step)

    def log(step: int, loss: float) -> None:
        experiment.log({"loss": loss}, step=step)
        board.add_scalar("loss", loss, step)
        board.flush()  # a crash loses nothing logged

    return log


def train_sharded(run: resilient.Run, dump_dir: str, epochs: int = 2, gate_steps: tuple[int, ...] = (),
                  gate_dir: str | None = None) -> dict[str, int]:
    """tests/loop/scripts/train.py's FSDP2 job (a transformer block, AdamW, a per-step LR schedule),
    on however many ranks the job got, for a job that comes back on another number of nodes.

    Rank 0 writes to `dump_dir` the whole model and optimizer state after every step
    (`step-N-ranksW.pt`, N steps done, as a checkpoint at step N holds it) and as restored at a resume (`restored-ranksW.pt`), and every rank
    appends each step's epoch and sample indices to `samples-rankR.txt`. Run it with
    async_save=False: the dumps gather the state through the process group while a
    background save could use it.
    """
    import tempfile

    import torch.distributed as dist

    from tests.loop.scripts.train import dump_restored, sharded_block

    if not dist.is_initialized():  # one rank: FSDP needs a process group all the same
        dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    inputs = torch.randn(96, 8, generator=torch.Generator().manual_seed(1234))
    dataset = TensorDataset(inputs, (inputs.sum(dim=1) > 0).long(), torch.arange(96))
    model, optimizer = sharded_block()
    torch.manual_seed(100 + run.rank)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.7)
    sampler = resilient.ResumableSampler(dataset, shuffle=True, seed=7)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler)
    run.track(model=model, optimizer=optimizer, schedule=schedule, sampler=sampler)
    dumps, ranks = Path(dump_dir), f"ranks{run.world_size}"
    if run.resumed_from is not None:
        dump_restored(model, optimizer, True, run.rank, str(dumps / f"restored-{ranks}.pt"))
    for _ in run.epochs(epochs):
        for x, y, index in run.batches(loader):
            with open(dumps / f"samples-rank{run.rank}.txt", "a") as record:
                record.write(f"{run.epoch} {' '.join(map(str, index.tolist()))}\n")
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            done = run.step + 1  # steps done: a checkpoint of this step holds this state
            dump_restored(model, optimizer, True, run.rank, str(dumps / f"step-{done}-{ranks}.pt"))
            if run.step in gate_steps and gate_dir is not None:
                wait_for_gate(run, Path(gate_dir))
    return {"step": run.step, "world_size": run.world_size}


def make_job(run_dir: Path, **options: object) -> resilient.submission.Job:
    """`train_model` decorated with the given options (one decorator per test's run dir)."""
    rules = [resilient.ModelCheckpoint(every_n_train_steps=4, filename="{step}")]
    return resilient.job(checkpoint=rules, run_dir=run_dir, **options)(train_model)


def continued(run: resilient.Run) -> str:
    """Sends itself SIGCONT, as SLURM does at every preemption, requeue and scancel, and ends."""
    os.kill(os.getpid(), signal.SIGCONT)
    return "continued"


def wandb_environment(run: resilient.Run) -> dict[str, str | None]:
    """What a job sees of W&B's environment."""
    return {name: os.environ.get(name) for name in ("WANDB_RUN_ID", "WANDB_RESUME")}


def train_job_task(run: resilient.Run, task: str, out_dir: str, gates: str | None = None,
                   epochs: int = 3) -> dict[str, int]:
    """`train_model` as a sweep's task: its weights go to `<out_dir>/<task>.pt`; `gates` (a gate
    directory) makes the task hold at the steps `TASK_GATES` gives it, in `<gates>/<task>`."""
    gate_dir = None if gates is None else str(Path(gates) / task)
    if gate_dir is not None:
        Path(gate_dir).mkdir(parents=True, exist_ok=True)
    return train_model(run, out=str(Path(out_dir) / f"{task}.pt"), epochs=epochs,
                       gate_steps=TASK_GATES.get(task, ()), gate_dir=gate_dir)


# The steps at which each task of a sweep of `train_job_task` holds, when given a gate directory.
TASK_GATES: dict[str, tuple[int, ...]] = {"a": (10, 20), "b": (10,)}
