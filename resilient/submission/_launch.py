"""Submitting into a run directory: one live job per directory, a record of what was submitted.

Shared by `Job.submit()` and `resilient submit`, so that both refuse a second live job on the
same directory, both resume a run whose previous job has ended, and both leave `job.json`,
`config.yaml` and a `submitted` event for `resilient status` to read.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ..checkpoint import find_checkpoints
from ..coordination._signals import signal_number
from ..loop.run import _rules_from
from ..rundir import CONFIG_FILE, submitit_folder
from ..rundir import _events as events
from ..rundir._lock import RunDirError, RunDirInUse, RunLock
from ..rundir._record import JobRecord, is_alive, read_record, write_record
from ._executors import make_executor
from ._handle import JobHandle
from ._main import JobMain
from ._options import JobOptions


def _set_aside(run_dir: Path, options: JobOptions) -> Path | None:
    """`--fresh`: move the previous run out of the way (nothing is deleted); returns where to."""
    for rule in _rules_from(options.checkpoint):
        outside = rule.dirpath and not Path(rule.dirpath).resolve().is_relative_to(run_dir.resolve())
        if outside and find_checkpoints([Path(rule.dirpath)]):
            raise RunDirError(
                f"a fresh start would still resume from the checkpoints in {rule.dirpath} (a dirpath outside "
                f"the run directory); move them away first"
            )
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    stamp = f"{run_dir.name}.{datetime.now():%Y%m%d-%H%M%S}"
    aside = run_dir.with_name(stamp)
    for number in itertools.count(1):
        if not aside.exists():
            break
        aside = run_dir.with_name(f"{stamp}-{number}")  # two fresh starts within a second
    run_dir.rename(aside)
    return aside


def launch(
    function: Callable[..., Any],
    options: JobOptions,
    *,
    name: str,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    fire_drill_step: int | None = None,
    config: Mapping[str, Any] | None = None,
    fresh: bool = False,
) -> JobHandle:
    """Submit `function(run, *args, **kwargs)` into its run directory; RunDirInUse if a job lives there.

    The run directory's lock is held while checking and submitting, so two submissions cannot
    both find the directory free; a job that starts meanwhile waits for it.
    """
    run_dir = options.resolved_run_dir(name)
    previous = read_record(run_dir)
    if previous is not None and is_alive(previous):
        raise RunDirInUse(
            f"run_dir {run_dir} already has a live {previous.executor} job {previous.job_id}; "
            f"cancel it (resilient cancel {run_dir}) or choose another run_dir"
        )
    lock = RunLock(run_dir)
    lock.acquire(job_id=None, wait=False)  # held: a live process runs there (a plain script, say)
    try:
        set_aside = None
        if fresh:
            lock.release()
            set_aside = _set_aside(run_dir, options)
            lock = RunLock(run_dir)
            lock.acquire(job_id=None, wait=False)
        if config is not None:
            (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(dict(config), sort_keys=False))
        executor = make_executor(options, submitit_folder(run_dir), name)
        job = executor.submit(JobMain(function, options, run_dir, args, dict(kwargs or {}), fire_drill_step))
        record = JobRecord(
            job_id=str(job.job_id), executor=options.executor, name=name, submitted=time.time(),
            host=socket.gethostname(), tasks=options.nodes * options.tasks_per_node,
            warning_signal=signal_number(options.warning_signal, name="warning_signal"),
        )
        write_record(run_dir, record)
        events.append_event(
            run_dir, events.SUBMITTED, job_id=record.job_id, executor=record.executor, name=name,
            previous_job=previous.job_id if previous else None, set_aside=str(set_aside) if set_aside else None,
        )
    finally:
        lock.release()
    return JobHandle(run_dir, record, job)
