"""The schedulers a job runs under, asked from inside and outside the job.

SLURM through `Scheduler` (`_commands.py`, the only module that runs its commands) and the pure
parsers of what it prints (`_parse.py`); submitit's local executor through its processes
(`_local.py`).
"""

from ._commands import (
    SLURM,
    Scheduler,
    SlurmCommandError,
    SlurmCommands,
    missing_submit_commands,
)
from ._local import local_controller, local_end_time, local_tasks
from ._parse import (
    ENDED_STATES,
    UNKNOWN_STATE,
    WAITING_STATES,
    JobInfo,
    job_id_from_env,
    parse_duration,
    parse_job,
    parse_queue_state,
    parse_time,
)

__all__ = [
    "ENDED_STATES", "SLURM", "UNKNOWN_STATE", "WAITING_STATES", "JobInfo", "Scheduler", "SlurmCommandError",
    "SlurmCommands", "job_id_from_env", "local_controller", "local_end_time", "local_tasks", "missing_submit_commands",
    "parse_duration", "parse_job", "parse_queue_state", "parse_time",
]
