"""Every name in a run directory, in one place: the one module that spells them.

The job, the CLI and the next submission all find a run's files by these names, and they are on
disk in every run ever made: a name spelled twice could drift, and a run written by one version
would look empty to the next. Everything else builds its paths from the names and helpers here.

    <run_dir>/
      config.yaml          the resolved job file (`resilient submit`)
      job.json             the current submission: job id, executor, when (`_record.py`)
      status.json          state and requeue counts (`_status.py`), updated under .status.json.lock
      events.jsonl         one line per event, appended by the job's main process and the CLI
      trackers.json        the run's W&B / MLflow / TensorBoard identities (`_trackers.py`)
      checkpoints/         the rules' checkpoints; checkpoints/emergency/ for stops
      submitit/            submitit's pickles and logs
      .lock                held by the running job's rank 0 (`_lock.py`)
      .heartbeat           rank 0's last step, mapped into memory (`_heartbeat.py`)

A sweep's directory (`sweep:` in the job file) holds one run directory per task, and:

    <sweep_dir>/
      sweep.json           the task table: index, name, overrides, directory (`_sweep.py`)
      config.yaml          the job file as submitted, overrides applied, its sweep included
      submitit/            a SLURM array's pickles and every task's logs (shared by the array)
      <task name>/         each task's own run directory, as above
"""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"
RECORD_FILE = "job.json"
STATUS_FILE = "status.json"
STATUS_LOCK_FILE = f".{STATUS_FILE}.lock"
EVENTS_FILE = "events.jsonl"
LOCK_FILE = ".lock"
CHECKPOINTS_DIR = "checkpoints"
EMERGENCY_DIR = "emergency"  # inside CHECKPOINTS_DIR
SUBMITIT_DIR = "submitit"
TRACKERS_FILE = "trackers.json"
HEARTBEAT_FILE = ".heartbeat"
SWEEP_FILE = "sweep.json"

# The records mark a directory as a run's: every submission and every Run writes one.
RUN_RECORDS = (CONFIG_FILE, RECORD_FILE, STATUS_FILE, EVENTS_FILE)
# Everything a run puts in its directory, besides the dot-names its records are written under.
RUN_ENTRIES = frozenset({*RUN_RECORDS, CHECKPOINTS_DIR, SUBMITIT_DIR, LOCK_FILE, TRACKERS_FILE, HEARTBEAT_FILE})
# Everything a sweep puts in its directory besides its tasks' run directories.
SWEEP_ENTRIES = frozenset({SWEEP_FILE, CONFIG_FILE, SUBMITIT_DIR, LOCK_FILE})


def checkpoints_dir(run_dir: Path) -> Path:
    """Where the rules save by default."""
    return run_dir / CHECKPOINTS_DIR


def emergency_dir(run_dir: Path) -> Path:
    """Where the checkpoint taken on a stop goes, apart from the rules' own."""
    return checkpoints_dir(run_dir) / EMERGENCY_DIR


def submitit_folder(run_dir: Path) -> Path:
    """submitit's folder: its pickles, batch script and the ranks' logs."""
    return run_dir / SUBMITIT_DIR


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a run: something was submitted or started there."""
    return (path / RECORD_FILE).is_file() or (path / STATUS_FILE).is_file()


def is_sweep_dir(path: Path) -> bool:
    """Whether `path` holds a sweep: a sweep was submitted there."""
    return (path / SWEEP_FILE).is_file()


def is_emergency(checkpoint: Path) -> bool:
    """Whether `checkpoint` is an emergency checkpoint (by where it lies, as `emergency_dir` puts it)."""
    return checkpoint.parent.name == EMERGENCY_DIR
