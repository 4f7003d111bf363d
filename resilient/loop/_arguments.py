"""Checks of `Run`'s plain arguments, before anything is started, in the words users see."""

from __future__ import annotations

import os
from pathlib import Path

RUN_DIR_ENV = "RESILIENT_RUN_DIR"


def run_dir_from(run_dir: str | os.PathLike[str] | None) -> Path:
    """The absolute run directory: the argument, else `$RESILIENT_RUN_DIR`, else the current directory."""
    if run_dir is None:
        run_dir = os.environ.get(RUN_DIR_ENV) or os.getcwd()
    if not isinstance(run_dir, (str, os.PathLike)) or str(run_dir) == "":
        raise TypeError(f"run_dir must be a path, not {run_dir!r}")
    path = Path(run_dir).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"run_dir {str(path)!r} exists and is not a directory")
    return path


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def check_backend_and_clock(backend: object, clock: object) -> None:
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a string such as 'gloo' or 'nccl', not {backend!r}")
    if not callable(clock):
        raise TypeError(f"clock must be a callable returning seconds, not {clock!r}")


def check_epochs(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"epochs(n): n must be an int, not {n!r}")
    if n < 0:
        raise ValueError(f"epochs(n): n must be >= 0, not {n}")


def checkpoint_path(path: object, suffix: str) -> Path:
    """`save_checkpoint`'s argument as an absolute path, if it names a checkpoint directory."""
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"save_checkpoint(path): path must be a file system path, not {path!r}")
    if not str(path).endswith(suffix):
        raise ValueError(f"save_checkpoint(path): a checkpoint is a directory named *{suffix}, not {str(path)!r}")
    return Path(path).absolute()


