"""The handle names a rank's log files as submitit writes them.

`JobHandle.log_path` spells submitit's names itself, so that `resilient logs` does not import
submitit; this checks the spelling against submitit's own `JobPaths`, for plain and array jobs.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from submitit.core.utils import JobPaths

from resilient.rundir import JobRecord, submitit_folder
from resilient.submission import JobHandle


@pytest.mark.parametrize("job_id", ["4711", "4711_3"])
@pytest.mark.parametrize("rank", [0, 2])
def test_log_paths_are_the_files_submitit_writes(tmp_path: Path, job_id: str, rank: int) -> None:
    record = JobRecord(job_id=job_id, executor="slurm", name="train", submitted=time.time(), host="head", tasks=3,
                       warning_signal=int(signal.SIGUSR2))
    handle = JobHandle(tmp_path, record)
    paths = JobPaths(submitit_folder(tmp_path), job_id, rank)
    assert (handle.log_path(rank, "stdout"), handle.log_path(rank, "stderr")) == (paths.stdout, paths.stderr)
