"""Submitting into a run directory: one live job per directory, a record of what was submitted.

Shared by `Job.submit()` and `resilient submit`, so that both refuse a second live job on the
same directory, both resume a run whose previous job has ended, and both leave `job.json`,
`config.yaml` and a `submitted` event for `resilient status` to read.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import submitit
import yaml

from ..checkpoint import find_checkpoints, is_checkpoint_entry
from ..rules import ModelCheckpoint, rule_list
from ..rundir import (
    CONFIG_FILE,
    FILE_MODE,
    LOCK_FILE,
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    RUN_ENTRIES,
    RUN_RECORDS,
    Event,
    JobRecord,
    RunDirError,
    RunDirInUse,
    RunLock,
    append_event,
    make_dirs,
    read_record,
    submitit_folder,
    write_atomically,
    write_record,
)
from ..settings import check_fire_drill_step, signal_number
from ._errors import SubmissionError
from ._executors import make_executor, require_slurm
from ._handle import JobHandle
from ._liveness import is_alive
from ._main import JobMain
from ._options import JobOptions

# A run leaves only RUN_ENTRIES in its directory, and its RUN_RECORDS mark the directory as a run's.
# Anything else there is someone else's (a data directory named by mistake, a home directory),
# which is why such a directory is never written into or moved.
_SHOWN_ENTRIES = 3


def listed(names: Sequence[str]) -> str:
    """The first few of `names` and how many more, for a message about what a directory holds."""
    more = len(names) - _SHOWN_ENTRIES
    return ", ".join(names[:_SHOWN_ENTRIES]) + (f" and {more} more" if more > 0 else "")


def refuse_foreign_run_dir(run_dir: Path, checkpoint: ModelCheckpoint | Sequence[ModelCheckpoint] | None) -> None:
    """RunDirError if `run_dir` holds anything a run does not put there.

    A run's entries are its records, `checkpoints/`, `submitit/`, the lock, the dot-names its
    records are written (and locked) under, and where the rules of `checkpoint` write inside it.
    """
    if not run_dir.is_dir():
        return
    owned, holds_checkpoints = set(RUN_ENTRIES), False
    for rule in rule_list(checkpoint):
        if rule.dirpath and Path(rule.dirpath).is_relative_to(run_dir.resolve()):
            inside = Path(rule.dirpath).relative_to(run_dir.resolve()).parts
            owned.update(inside[:1])
            holds_checkpoints = holds_checkpoints or not inside  # a rule writing into run_dir itself
    foreign = sorted(entry.name for entry in run_dir.iterdir() if not (
        entry.name in owned
        or entry.name.startswith(tuple(f".{record}." for record in RUN_RECORDS))
        or (holds_checkpoints and is_checkpoint_entry(entry.name))))
    if foreign:
        raise RunDirError(
            f"{run_dir} holds files that are not a run's ({listed(foreign)}); resilient neither writes into "
            "nor moves such a directory: choose a run_dir of its own, such as runs/NAME"
        )


def _set_aside(run_dir: Path, options: JobOptions) -> Path | None:
    """`--fresh`: move the previous run out of the way (nothing is deleted); returns where to.

    Only a run directory moves: one that holds a run's records and nothing that is not a run's.
    """
    for rule in rule_list(options.checkpoint):
        outside = rule.dirpath and not Path(rule.dirpath).resolve().is_relative_to(run_dir.resolve())
        if outside and find_checkpoints([Path(rule.dirpath)]):
            raise RunDirError(
                f"a fresh start would still resume from the checkpoints in {rule.dirpath} (a dirpath outside "
                f"the run directory); move them away first"
            )
    refuse_foreign_run_dir(run_dir, options.checkpoint)
    names = ({entry.name for entry in run_dir.iterdir()} - {LOCK_FILE}) if run_dir.is_dir() else set()
    if not names:
        return None
    if not names.intersection(RUN_RECORDS):
        raise RunDirError(
            f"run_dir {run_dir} holds {', '.join(sorted(names))} but no record of a run ({', '.join(RUN_RECORDS)}); "
            "--fresh moves only a run directory: move these away first"
        )
    return move_aside(run_dir)


def move_aside(directory: Path) -> Path:
    """Rename `directory` to `<name>.<timestamp>` beside it (nothing is deleted); returns the new path."""
    stamp = f"{directory.name}.{datetime.now():%Y%m%d-%H%M%S}"
    aside = directory.with_name(stamp)
    for number in itertools.count(1):
        if not aside.exists():
            break
        aside = directory.with_name(f"{stamp}-{number}")  # two fresh starts within a second
    directory.rename(aside)
    return aside


def _entries(run_dir: Path) -> set[Path]:
    folder = submitit_folder(run_dir)
    return {*run_dir.iterdir(), *(folder.iterdir() if folder.is_dir() else ())}


@contextmanager
def _nothing_left_on_failure(run_dir: Path) -> Iterator[None]:
    """Make the run directory; if the submission then fails, take away what it made.

    A run directory made here (or remade, by --fresh) goes whole; in an existing one, the files
    added to it and to its submitit folder go (the lock, submitit's pickle and batch script).
    """
    made = make_dirs(run_dir)
    identity = os.stat(run_dir).st_ino
    before = _entries(run_dir)
    try:
        yield
    except Exception:
        if made or not run_dir.is_dir() or os.stat(run_dir).st_ino != identity:
            shutil.rmtree(made[0] if made else run_dir, ignore_errors=True)
        else:
            for path in sorted(_entries(run_dir) - before, key=lambda path: len(path.parts), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def _private_folder(run_dir: Path) -> Path:
    """submitit's folder, readable by this user alone: its pickles are the code the job will run."""
    folder = submitit_folder(run_dir)
    if not make_dirs(folder, PRIVATE_DIR_MODE) and folder.stat().st_uid == os.getuid():
        folder.chmod(PRIVATE_DIR_MODE)  # made by an older version, or by hand
    return folder


def _submit(executor: submitit.Executor, main: JobMain[Any]) -> submitit.Job[Any]:
    """Submit, with the pickle and the batch script private; SubmissionError if the scheduler refuses."""
    try:
        job = executor.submit(main)
    except (submitit.core.utils.FailedJobError, OSError) as error:
        reason = str(error).strip().splitlines() or [type(error).__name__]
        raise SubmissionError(f"the {main.options.executor} submission failed: {reason[-1]}") from error
    for path in (job.paths.submitted_pickle, job.paths.submission_file):
        if path.exists():
            path.chmod(PRIVATE_FILE_MODE)
    return job


def write_config(directory: Path, config: Mapping[str, Any]) -> None:
    """The resolved job file, as YAML, in the run's (or the sweep's) directory: private when it
    holds a webhook URL, which is often a secret (Slack's is)."""
    notify = config.get("notify")
    secret = isinstance(notify, Mapping) and notify.get("webhook") is not None
    write_atomically(directory / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False),
                     PRIVATE_FILE_MODE if secret else FILE_MODE)


def refuse_live(run_dir: Path) -> JobRecord | None:
    """The run's previous submission, if any; RunDirInUse if its job may still run."""
    previous = read_record(run_dir)
    if previous is not None and is_alive(previous):
        raise RunDirInUse(
            f"run_dir {run_dir} already has a live {previous.executor} job {previous.job_id}; "
            f"cancel it (resilient cancel {run_dir}) or choose another run_dir"
        )
    return previous


def record_submission(run_dir: Path, job_id: str, options: JobOptions, name: str, *, previous: JobRecord | None,
                      set_aside: Path | None = None, config: Mapping[str, Any] | None = None,
                      shared_submitit: bool = False) -> JobRecord:
    """Leave what `resilient status` reads of a submitted job: config.yaml, job.json, a `submitted` event."""
    if config is not None:
        write_config(run_dir, config)
    record = JobRecord(
        job_id=job_id, executor=options.executor, name=name, submitted=time.time(),
        host=socket.gethostname(), tasks=options.max_tasks,
        warning_signal=signal_number(options.warning_signal, name="warning_signal"), shared_submitit=shared_submitit,
    )
    write_record(run_dir, record)
    append_event(
        run_dir, Event.SUBMITTED, job_id=record.job_id, executor=record.executor, name=name,
        previous_job=previous.job_id if previous else None, set_aside=str(set_aside) if set_aside else None,
    )
    return record


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
    both find the directory free; a job that starts meanwhile waits for it. A submission that
    fails (SubmissionError: no SLURM here, or the scheduler refused) leaves nothing behind.
    `fresh` (the command line's --fresh) moves the previous run aside and says where, on stdout.
    """
    run_dir = options.resolved_run_dir(name)
    check_fire_drill_step(fire_drill_step)
    if options.executor == "slurm":
        require_slurm()  # before anything is made
    previous = refuse_live(run_dir)
    lock = RunLock(run_dir)
    try:
        with _nothing_left_on_failure(run_dir):
            lock.acquire(job_id=None, wait=False)  # held: a live process runs there (a plain script, say)
            set_aside = None
            if fresh:
                lock.release()
                set_aside = _set_aside(run_dir, options)
                if set_aside is not None:
                    print(f"moved the previous run to {set_aside}", flush=True)
                lock = RunLock(run_dir)
                lock.acquire(job_id=None, wait=False)
            executor = make_executor(options, _private_folder(run_dir), name)
            job = _submit(executor, JobMain(function, options, run_dir, args, dict(kwargs or {}), fire_drill_step))
        record = record_submission(run_dir, str(job.job_id), options, name, previous=previous, set_aside=set_aside,
                                   config=config)
    finally:
        lock.release()
    return JobHandle(run_dir, record, job)
