"""Creating the run directory's files and directories: never writable by other users.

Modes are given explicitly, so that even under `umask 000` nothing here is writable by anyone
else (a stricter umask still applies): `config.yaml` and submitit's pickles are code the job
will run, `status.json` decides whether it requeues, and a directory others can write to lets
them replace any of these.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o644
DIR_MODE = 0o755
PRIVATE_FILE_MODE = 0o600  # submitit's pickles and batch script: the code the job runs
PRIVATE_DIR_MODE = 0o700


def current_umask() -> int:
    """This process's umask, read without changing it where Linux allows (no race with threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def make_dirs(path: Path, mode: int = DIR_MODE) -> list[Path]:
    """`mkdir -p`, each new directory with `mode` (less the umask); returns those it made, outermost first."""
    missing = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    made = []
    for directory in reversed(missing):
        try:
            directory.mkdir(mode)
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to remove
        made.append(directory)
    return made

