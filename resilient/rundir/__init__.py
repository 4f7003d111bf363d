"""The run directory: everything one training run leaves behind, in one place.

    <run_dir>/
      config.yaml     the resolved job file (`resilient submit`)
      job.json        the current submission: job id, executor, when (`_record.py`)
      status.json     state and requeue counts (`requeue/_status.py`)
      events.jsonl    one line per event, appended by the job's main process and the CLI
      checkpoints/    the rules' checkpoints; checkpoints/emergency/ for stops
      submitit/       submitit's pickles and logs
      .lock           held by the running job's rank 0 (`_lock.py`)

Keeping all of it under one directory is what lets `resilient status RUN` tell a job's whole
story, and lets a second submission find the first and resume it.
"""

from pathlib import Path

from ._lock import RunDirInUse

__all__ = ["CONFIG_FILE", "RunDirInUse", "submitit_folder"]

CONFIG_FILE = "config.yaml"
SUBMITIT_DIR = "submitit"


def submitit_folder(run_dir: Path) -> Path:
    return run_dir / SUBMITIT_DIR
