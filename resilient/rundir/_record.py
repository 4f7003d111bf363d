"""`job.json`: which job currently owns the run directory, and whether it is still alive.

Written by whoever submits (the CLI or `.submit()`), read by `resilient status`, `logs`,
`cancel` and `preempt`, and by the next submission, which refuses to start a second live job
on the same directory (asking the scheduler whether the recorded job is still alive).
"""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ._files import DamagedFile, read_json_object, type_problem
from ._layout import RECORD_FILE, SUBMITIT_DIR
from ._vocabulary import Vocabulary
from ._write import write_json


class Executor(Vocabulary):
    """Where a job runs: this machine, a SLURM cluster, or inside the submitting process."""

    LOCAL = "local"
    SLURM = "slurm"
    DEBUG = "debug"


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    executor: str
    name: str
    submitted: float  # time.time() of the submission
    host: str  # where it was submitted: a local job's controller runs there
    tasks: int  # the most ranks the job can have (all its nodes, with a node range the most of them)
    warning_signal: int
    # A SLURM array task of a sweep: submitit's folder (pickles, logs) is the sweep's, shared by
    # the array, not the run's own. Absent in job.json written before sweeps existed.
    shared_submitit: bool = False

    def submitit_folder(self, run_dir: Path) -> Path:
        """submitit's folder for this job: the run's own, or its sweep's for an array task."""
        return (run_dir.parent if self.shared_submitit else run_dir) / SUBMITIT_DIR


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "job_id": (str,), "executor": (str,), "name": (str,), "submitted": (int, float), "host": (str,),
    "tasks": (int,), "warning_signal": (int,), "shared_submitit": (bool,),
}


def write_record(run_dir: Path, record: JobRecord) -> None:
    write_json(run_dir / RECORD_FILE, asdict(record))


def read_record(run_dir: Path) -> JobRecord | None:
    """The run's submission record; None if nothing was ever submitted there, DamagedFile if unreadable."""
    path = run_dir / RECORD_FILE
    raw = read_json_object(path)
    if raw is None:
        return None
    missing = [field.name for field in fields(JobRecord) if field.name not in raw and field.name != "shared_submitit"]
    problem = f"no {missing[0]!r}" if missing else type_problem(raw, _FIELD_TYPES)
    if problem is None and raw["executor"] not in {executor.value for executor in Executor}:
        problem = f"executor {raw['executor']!r:.40} is none of {', '.join(executor.value for executor in Executor)}"
    if problem is None and raw["tasks"] < 1:
        problem = f"tasks is {raw['tasks']}"
    if problem is None and raw["warning_signal"] not in set(signal.Signals):
        problem = f"warning_signal {raw['warning_signal']} is not a signal"
    if problem is not None:
        raise DamagedFile(path, problem)
    return JobRecord(**{field.name: raw[field.name] for field in fields(JobRecord) if field.name in raw})
