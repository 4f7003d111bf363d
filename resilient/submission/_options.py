"""Everything a job needs besides its function: where it runs, with what, how it may come back.

One validated, picklable record that the decorator, `.submit()` and the job file (through
`config/`) all end in; its checks are those of `resilient.settings`, with the same messages
naming the bad parameter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..loop import OnSaveError
from ..requeue import Notify, RequeuePolicy
from ..rules import ModelCheckpoint
from ..settings import (
    DEFAULT_WARNING_SIGNAL,
    check_count,
    check_nodes,
    check_safe_text,
    node_range,
    run_dir_for,
    signal_number,
)
from ._errors import EXECUTORS

_CLUSTER_DEFAULT = "the cluster's default"


@dataclass(frozen=True)
class JobOptions:
    """A job's settings; see `resilient.job` for what each one means."""

    checkpoint: ModelCheckpoint | Sequence[ModelCheckpoint] | None = None
    run_dir: str | os.PathLike[str] | None = None
    executor: str = "local"
    nodes: int | str = 1  # or a range "MIN-MAX" (sbatch --nodes=MIN-MAX)
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    warning_signal: str | int = DEFAULT_WARNING_SIGNAL
    signal_delay_s: int = 120
    slurm_options: dict[str, Any] = field(default_factory=dict)
    max_requeues: int | None = None
    max_crash_requeues: int = 0
    on_save_error: str = "stop"
    async_save: bool = True
    notify: Notify | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        node_range(self.nodes)
        for name in ("tasks_per_node", "timeout_min", "signal_delay_s"):
            check_count(name, getattr(self, name), minimum=1)
        check_count("gpus_per_node", self.gpus_per_node, minimum=0)
        for name in ("cpus_per_task", "mem_gb"):
            check_count(name, getattr(self, name), minimum=1, none_means=_CLUSTER_DEFAULT)
        for name in ("partition", "account", "qos"):
            if getattr(self, name) is not None:
                check_safe_text(name, getattr(self, name))
        check_nodes(self.nodes, self.executor, self.tasks_per_node)
        signal_number(self.warning_signal, name="warning_signal")
        if not isinstance(self.slurm_options, dict):
            raise TypeError(f"slurm_options must be a dict of sbatch options, not {self.slurm_options!r}")
        for key, value in self.slurm_options.items():
            check_safe_text("slurm_options key", key)
            if not isinstance(value, bool):
                check_safe_text(f"slurm_options[{key!r}]", str(value))
        RequeuePolicy(self.max_requeues, self.max_crash_requeues)
        OnSaveError.parse(self.on_save_error)
        if not isinstance(self.async_save, bool):
            raise TypeError(f"async_save must be True or False, not {self.async_save!r:.40}")
        if self.notify is not None and not isinstance(self.notify, Notify):
            raise TypeError(f"notify must be a resilient.Notify, not {self.notify!r:.80}")
        if self.run_dir is not None and not isinstance(self.run_dir, (str, os.PathLike)):
            raise TypeError(f"run_dir must be a path, not {self.run_dir!r}")

    @property
    def max_tasks(self) -> int:
        """The most ranks the job can have: all its tasks on the most nodes it may get."""
        return node_range(self.nodes)[1] * self.tasks_per_node

    def resolved_run_dir(self, function_name: str) -> Path:
        """`run_dir`, or `runs/<function name>` under the current directory, absolute."""
        return run_dir_for(self.run_dir, function_name)

    def run_arguments(self, run_dir: Path) -> dict[str, Any]:
        """Keyword arguments for the `Run` inside the job."""
        return {
            "checkpoint": self.checkpoint,
            "run_dir": run_dir,
            "warning_signal": self.warning_signal,
            "max_requeues": self.max_requeues,
            "max_crash_requeues": self.max_crash_requeues,
            "on_save_error": self.on_save_error,
            "async_save": self.async_save,
            "notify": self.notify,
        }
