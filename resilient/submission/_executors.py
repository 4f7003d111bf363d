"""Turning JobOptions into a configured submitit executor.

submitit does the submitting (sbatch script, pickles, logs, the local controller); resilient
adds what it lacks: the warning signal resilient listens for, `--requeue` so SLURM may bring
the job back, and a time limit for the local executor (submitit's default kills it at 2 min).
"""

from __future__ import annotations

import signal
from pathlib import Path

import submitit

from ..coordination._signals import signal_number
from ..requeue._host import SIGNAL_DELAY_ENV
from ._options import JobOptions


def signal_option(options: JobOptions) -> str:
    """The value of sbatch's --signal: the warning signal, `signal_delay_s` before the end."""
    name = signal.Signals(signal_number(options.warning_signal, name="warning_signal")).name
    return f"{name.removeprefix('SIG')}@{options.signal_delay_s}"


def make_executor(options: JobOptions, folder: Path, name: str) -> submitit.Executor:
    if options.executor == "debug":
        return submitit.DebugExecutor(folder)
    if options.executor == "local":
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(
            tasks_per_node=options.tasks_per_node,
            gpus_per_node=options.gpus_per_node,
            timeout_min=options.timeout_min,
            signal_delay_s=options.signal_delay_s,
        )
        return executor
    executor = submitit.SlurmExecutor(folder)
    parameters: dict[str, object] = {
        "job_name": name,
        "nodes": options.nodes,
        "ntasks_per_node": options.tasks_per_node,
        "time": options.timeout_min,
        "signal_delay_s": options.signal_delay_s,
        "additional_parameters": {"requeue": True, "signal": signal_option(options), **options.slurm_options},
        "setup": [f"export {SIGNAL_DELAY_ENV}={options.signal_delay_s}"],
    }
    if options.gpus_per_node:
        parameters["gpus_per_node"] = options.gpus_per_node
    if options.cpus_per_task is not None:
        parameters["cpus_per_task"] = options.cpus_per_task
    if options.mem_gb is not None:
        parameters["mem"] = f"{options.mem_gb}GB"
    for key in ("partition", "account", "qos"):
        if getattr(options, key) is not None:
            parameters[key] = getattr(options, key)
    executor.update_parameters(**parameters)
    return executor
