"""Reading what SLURM tells a job: its environment, `scontrol show job` records, `squeue` states.

Pure functions of the text, so the decisions built on them (why a job stopped, when it ends,
whether it is still queued) can be tested from recorded output without a cluster, the way
submitit tests its own parsing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

# squeue states in which a job will not run again ('' once it has left the queue).
ENDED_STATES = frozenset({"", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                          "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
# squeue states of a job that has no process running: queued, or held after a requeue.
WAITING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"})
UNKNOWN_STATE = "UNKNOWN"  # what a machine without squeue can say about any job


def job_id_from_env(env: Mapping[str, str] = os.environ) -> str | None:
    """The id `scontrol` needs for this job: `ARRAYID_TASKID` for an array task."""
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return env.get("SLURM_JOB_ID") or None


def parse_fields(text: str) -> dict[str, str]:
    """`Key=Value Key2=Value two` -> dict; values may hold spaces.

    Takes scontrol's one-line form (`--oneliner`) and its default form of indented lines alike.
    """
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
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


def parse_time(raw: str | None) -> float | None:
    """A SLURM date (`2026-11-28T21:09:06`, local time) as Unix time; None for Unknown, None or NONE."""
    try:
        return time.mktime(time.strptime(raw or "", "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def parse_duration(raw: str | None) -> float | None:
    """A TimeLimit as scontrol prints it ([days-]hours:minutes:seconds) in seconds; None if unlimited."""
    if not raw or raw in ("UNLIMITED", "Partition_Limit", "NONE"):
        return None
    days, _, rest = raw.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts[-3:]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


@dataclass(frozen=True)
class JobInfo:
    """A job's record as `scontrol show job` prints it; each field is read only when asked for."""

    fields: Mapping[str, str]

    @property
    def state(self) -> str:
        return self.fields.get("JobState", "")

    @property
    def reason(self) -> str:
        return self.fields.get("Reason", "")

    @property
    def preempted(self) -> bool:
        """PreemptTime is set: the one field only a preemption sets (slurm/README.md)."""
        return self.fields.get("PreemptTime", "None") not in ("None", "")

    @property
    def start_time(self) -> float | None:
        return parse_time(self.fields.get("StartTime"))

    @property
    def end_time(self) -> float | None:
        """When the cluster ends the job (a preemption moves it to PreemptTime + GraceTime)."""
        return parse_time(self.fields.get("EndTime"))

    @property
    def time_limit_s(self) -> float | None:
        return parse_duration(self.fields.get("TimeLimit"))


def parse_job(text: str) -> JobInfo:
    """`scontrol show job ID` output (one job) -> its record."""
    return JobInfo(parse_fields(text))


def parse_queue_state(text: str) -> str:
    """`squeue --noheader --format %T` output -> the job's state, '' once it has left the queue."""
    return text.strip().splitlines()[0] if text.strip() else ""
