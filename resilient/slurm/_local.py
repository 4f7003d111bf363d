"""Finding the processes of a job that submitit's local executor runs, the other scheduler.

The local executor has no queue to ask: its controller process is the job (the job id is its
pid), its tasks are the controller's children, and each (re)start of the tasks is timed from
when the controller launched them. Every question about a local job is answered here, from the
processes themselves.
"""

from __future__ import annotations

import socket

import psutil

_CONTROLLER_MODULE = "submitit.local._local"  # what `python -m` the controller runs


def local_controller(job_id: str, host: str, submitted: float) -> psutil.Process | None:
    """The local job's controller, if it still runs on `host` (and is not a reused pid)."""
    if host != socket.gethostname():
        return None
    try:
        process = psutil.Process(int(job_id))
        alive = process.create_time() <= submitted + 1 and _CONTROLLER_MODULE in " ".join(process.cmdline())
    except (psutil.Error, ValueError):
        return None
    return process if alive else None


def local_tasks(controller: psutil.Process | None, rank: int | None) -> list[psutil.Process]:
    """The controller's task processes, by the rank submitit gave them (None: all); [] if none runs."""
    tasks = []
    for process in controller.children(recursive=True) if controller is not None else []:
        try:
            global_id = process.environ().get("SUBMITIT_LOCAL_GLOBALID")
        except psutil.Error:
            continue
        if global_id is not None and (rank is None or int(global_id) == rank):
            tasks.append(process)
    return tasks


def local_end_time(timeout_s: float | None) -> float | None:
    """When the controller times out this task: `timeout_s` after it started it (None: never)."""
    return psutil.Process().create_time() + timeout_s if timeout_s is not None else None
