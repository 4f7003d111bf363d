"""Everything a job needs besides its function: where it runs, with what, how it may come back.

One validated, picklable record, so that the decorator, `.submit()` and (later) job.yaml share
the same checks and the same messages naming the bad parameter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..coordination._signals import signal_number
from ..loop._saving import OnSaveError
from ..requeue._policy import RequeuePolicy
from ..rules import ModelCheckpoint
from ..rundir._record import Executor

EXECUTORS = tuple(executor.value for executor in Executor)
# Values that end up in the generated batch script: plain tokens only, nothing a shell interprets.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=@%+/-]*$")


def _positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return value


def _safe_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string, not {value!r}")
    if not _SAFE_VALUE.fullmatch(value):
        raise ValueError(f"{name}={value!r} contains characters that are not allowed in a batch script option")
    return value


@dataclass(frozen=True)
class JobOptions:
    """A job's settings; see `resilient.job` for what each one means."""

    checkpoint: ModelCheckpoint | Sequence[ModelCheckpoint] | None = None
    run_dir: str | os.PathLike[str] | None = None
    executor: str = "local"
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    warning_signal: str | int = "USR2"
    signal_delay_s: int = 120
    slurm_options: dict[str, Any] = field(default_factory=dict)
    max_requeues: int | None = None
    max_crash_requeues: int = 0
    on_save_error: str = "stop"

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        for name in ("nodes", "tasks_per_node", "timeout_min", "signal_delay_s"):
            _positive_int(name, getattr(self, name))
        _positive_int("gpus_per_node", self.gpus_per_node, minimum=0)
        for name in ("cpus_per_task", "mem_gb"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("partition", "account", "qos"):
            _safe_text(name, getattr(self, name))
        if self.executor != "slurm" and self.nodes > 1:
            raise ValueError(f"nodes={self.nodes} needs executor='slurm'; the {self.executor} executor has one node")
        signal_number(self.warning_signal, name="warning_signal")
        if not isinstance(self.slurm_options, dict):
            raise TypeError(f"slurm_options must be a dict of sbatch options, not {self.slurm_options!r}")
        for key, value in self.slurm_options.items():
            _safe_text(f"slurm_options key {key!r}", key)
            if not isinstance(value, bool):
                _safe_text(f"slurm_options[{key!r}]", str(value))
        RequeuePolicy(self.max_requeues, self.max_crash_requeues)
        OnSaveError.parse(self.on_save_error)
        if self.run_dir is not None and not isinstance(self.run_dir, (str, os.PathLike)):
            raise TypeError(f"run_dir must be a path, not {self.run_dir!r}")

    def resolved_run_dir(self, function_name: str) -> Path:
        """`run_dir`, or `runs/<function name>` under the current directory."""
        return Path(self.run_dir if self.run_dir is not None else Path("runs") / function_name).absolute()

    def run_arguments(self, run_dir: Path) -> dict[str, Any]:
        """Keyword arguments for the `Run` inside the job."""
        return {
            "checkpoint": self.checkpoint,
            "run_dir": run_dir,
            "warning_signal": self.warning_signal,
            "max_requeues": self.max_requeues,
            "max_crash_requeues": self.max_crash_requeues,
            "on_save_error": self.on_save_error,
        }
