"""Submitting a sweep: one SLURM array, or one local job per task, each task in its own run directory.

On SLURM a sweep is one job array (submitit's `executor.batch()`): one batch script, one
`sbatch`, and per task its own pickle (its function call with its own run directory) and its
own id `ARRAYID_TASKID`, which is what the task's `scontrol requeue` names, so a preempted or
timed-out task comes back alone. The array's pickles and logs are in the sweep's `submitit/`
folder; each task's job.json says so (`shared_submitit`). The local executor has no arrays: each
task is one local job, submitted as `launch` submits any job.

Every task directory is a run directory like any other, so `status`, `logs`, `cancel`,
`preempt` and a resubmission work on a task as on a run; `sweep.json` lists them for the
commands that take the whole sweep.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from ..rundir import (
    CONFIG_FILE,
    LOCK_FILE,
    PRIVATE_FILE_MODE,
    SWEEP_ENTRIES,
    SWEEP_FILE,
    RunDirError,
    RunLock,
    Sweep,
    SweepTask,
    is_run_dir,
    read_record,
    write_sweep,
)
from ._errors import SubmissionError
from ._executors import make_executor, require_slurm
from ._handle import JobHandle
from ._launch import (
    _nothing_left_on_failure,
    _private_folder,
    launch,
    listed,
    move_aside,
    record_submission,
    refuse_live,
    write_config,
)
from ._main import JobMain
from ._options import JobOptions


@dataclass(frozen=True)
class SweepTaskLaunch:
    """One task to submit: its name, its overrides (for sweep.json) and everything its job needs."""

    name: str
    overrides: dict[str, Any]
    options: JobOptions  # run_dir: the task's directory, <sweep dir>/<name>
    kwargs: dict[str, Any]
    fire_drill_step: int | None = None
    config: Mapping[str, Any] | None = None  # the task's resolved job file, for its config.yaml


def refuse_foreign_sweep_dir(sweep_dir: Path) -> None:
    """RunDirError if `sweep_dir` holds a run, or anything a sweep does not put there.

    A sweep's entries are its table, config.yaml, submitit/, the lock, the dot-names these are
    written under, and run directories (its tasks, including those of an earlier version of it).
    """
    if not sweep_dir.is_dir():
        return
    if is_run_dir(sweep_dir):
        raise RunDirError(
            f"{sweep_dir} holds a run, not a sweep: a sweep's tasks run in directories of their own inside its "
            "run_dir; choose another run_dir (or move that run away)")
    foreign = sorted(entry.name for entry in sweep_dir.iterdir() if not (
        entry.name in SWEEP_ENTRIES
        or entry.name.startswith(tuple(f".{record}." for record in (SWEEP_FILE, CONFIG_FILE)))
        or (entry.is_dir() and not entry.is_symlink() and is_run_dir(entry))))
    if foreign:
        raise RunDirError(
            f"{sweep_dir} holds files that are not a sweep's ({listed(foreign)}); resilient neither writes into nor moves "
            "such a directory: choose a run_dir of its own, such as runs/NAME")


def _refuse_live_tasks(sweep_dir: Path, tasks: Sequence[SweepTaskLaunch]) -> None:
    """RunDirInUse if any task of the sweep, or any other run in its directory, may still run."""
    directories = {Path(task.options.run_dir) for task in tasks}
    if sweep_dir.is_dir():
        directories.update(entry for entry in sweep_dir.iterdir() if entry.is_dir() and is_run_dir(entry))
    for directory in sorted(directories):
        refuse_live(directory)


def _refuse_locked(directories: Sequence[Path]) -> None:
    """RunDirInUse if a process holds the run lock of any task directory (a script run there by hand).

    Each lock is taken and let go at once rather than held through the submission: a sweep may
    have a thousand tasks (a thousand descriptors), and an array task that starts while its lock
    is held waits only seconds for it before giving up. The sweep's own lock keeps a second
    submission of the sweep out meanwhile.
    """
    for directory in directories:
        lock = RunLock(directory)
        lock.acquire(job_id=None, wait=False)
        lock.release()


def launch_sweep(function: Callable[..., Any], tasks: Sequence[SweepTaskLaunch], *, sweep_dir: Path, name: str,
                 max_parallel: int | None = None, config: Mapping[str, Any] | None = None,
                 fresh: bool = False) -> list[JobHandle]:
    """Submit every task of a sweep; their handles, in order.

    Refused (RunDirInUse) while any task of the sweep may still run; `fresh` moves the whole sweep
    directory aside first (nothing is deleted) and says where, on stdout. A submission again
    resumes every task in its own directory. A SLURM array that sbatch refuses leaves nothing
    behind. Local jobs are submitted one after another: if one fails, the ones before it run.
    """
    if not tasks:
        raise ValueError("a sweep needs at least one task")
    options = tasks[0].options
    if options.executor not in ("slurm", "local"):
        raise ValueError(f"a sweep runs on the slurm or local executor, not {options.executor!r}")
    if options.executor == "slurm":
        require_slurm()  # before anything is made
    _refuse_live_tasks(sweep_dir, tasks)
    refuse_foreign_sweep_dir(sweep_dir)
    # A refused array leaves nothing; local jobs, once one runs, are never taken away.
    with _nothing_left_on_failure(sweep_dir) if options.executor == "slurm" else nullcontext():
        sweep_lock = RunLock(sweep_dir)
        sweep_lock.acquire(job_id=None, wait=False)  # one submission of this sweep at a time
        try:
            if fresh and set(os.listdir(sweep_dir)) - {LOCK_FILE}:
                sweep_lock.release()
                print(f"moved the previous sweep to {move_aside(sweep_dir)}", flush=True)
                sweep_lock = RunLock(sweep_dir)
                sweep_lock.acquire(job_id=None, wait=False)
            if options.executor == "slurm":
                handles, job_id = _submit_array(function, tasks, sweep_dir, name, max_parallel)
            else:  # the table first: a task that runs is found by `resilient status` at once
                _write_table(sweep_dir, name, options.executor, None, max_parallel, tasks, config)
                handles = [_launch_local(function, task, name, index) for index, task in enumerate(tasks)]
                job_id = None
            _write_table(sweep_dir, name, options.executor, job_id, max_parallel, tasks, config)
        finally:
            sweep_lock.release()
    return handles


def _write_table(sweep_dir: Path, name: str, executor: str, job_id: str | None, max_parallel: int | None,
                 tasks: Sequence[SweepTaskLaunch], config: Mapping[str, Any] | None) -> None:
    if config is not None:
        write_config(sweep_dir, config)
    write_sweep(Sweep(sweep_dir, name, executor, job_id, max_parallel, tuple(
        SweepTask(index, task.name, task.overrides, Path(task.options.run_dir)) for index, task in enumerate(tasks))))


def _launch_local(function: Callable[..., Any], task: SweepTaskLaunch, name: str, index: int) -> JobHandle:
    try:
        return launch(function, task.options, name=name, kwargs=task.kwargs, fire_drill_step=task.fire_drill_step,
                      config=task.config)
    except (SubmissionError, RunDirError) as error:
        raise type(error)(f"task {index} ({task.name}) of the sweep: {error}; the tasks before it were submitted, "
                          "and submitting the sweep again resumes them") from error


def _submit_array(function: Callable[..., Any], tasks: Sequence[SweepTaskLaunch], sweep_dir: Path, name: str,
                  max_parallel: int | None) -> tuple[list[JobHandle], str]:
    """One SLURM array of every task; its handles and the array's id."""
    directories = [Path(task.options.run_dir) for task in tasks]
    previous = [read_record(directory) for directory in directories]  # none of them alive: checked before
    _refuse_locked(directories)
    for task, directory in zip(tasks, directories):  # before sbatch: less to write once tasks may start
        if task.config is not None:
            write_config(directory, task.config)
    folder = _private_folder(sweep_dir)
    executor = make_executor(tasks[0].options, folder, name, array_parallelism=max_parallel or len(tasks))
    try:
        with executor.batch():
            jobs = [executor.submit(JobMain(function, task.options, directory, (), task.kwargs, task.fire_drill_step))
                    for task, directory in zip(tasks, directories)]
    except (submitit.core.utils.FailedJobError, OSError) as error:
        reason = str(error).strip().splitlines() or [type(error).__name__]
        raise SubmissionError(f"the slurm submission of the sweep failed: {reason[-1]}") from error
    for path in folder.iterdir():  # the array's batch script and every task's pickle: the code it runs
        if path.name.endswith(("_submitted.pkl", "_submission.sh")):
            path.chmod(PRIVATE_FILE_MODE)
    handles = []
    for task, directory, job, before in zip(tasks, directories, jobs, previous):  # in the order tasks start
        record = record_submission(directory, str(job.job_id), task.options, name, previous=before,
                                   shared_submitit=True)
        handles.append(JobHandle(directory, record, job))
    return handles, str(jobs[0].job_id).partition("_")[0]
