"""Thin, typed wrappers around the `scontrol` calls a job makes about itself.

Only called at start and when stopping (never per step): each is a round trip to slurmctld.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping

SCONTROL_TIMEOUT_S = 60  # slurmctld can be slow when busy; a requeue must not be given up lightly


class SlurmCommandError(RuntimeError):
    """An scontrol call failed; the message carries its command line and stderr."""


def _run(*args: str) -> str:
    command = ["scontrol", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SlurmCommandError(f"{shlex.join(command)}: {error}") from None
    if done.returncode != 0:
        raise SlurmCommandError(f"{shlex.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _fields(line: str) -> dict[str, str]:
    """`Key=Value Key2=Value two` (scontrol's one-line form) -> dict; values may hold spaces."""
    fields: dict[str, str] = {}
    key = None
    for token in line.split(" "):
        name, sep, value = token.partition("=")
        if sep and name and name.replace("/", "").replace(":", "").isalnum():
            key = name
            fields[key] = value
        elif key is not None:
            fields[key] += " " + token
    return fields


def job_id_from_env(env: Mapping[str, str] = os.environ) -> str | None:
    """The id `scontrol` needs for this job: `ARRAYID_TASKID` for an array task."""
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return env.get("SLURM_JOB_ID") or None


def show_job(job_id: str) -> dict[str, str]:
    return _fields(_run("show", "job", "--oneliner", job_id).strip())


def requeue(job_id: str) -> None:
    _run("requeue", job_id)
