"""Turning JobOptions into a configured submitit executor.

submitit does the submitting (sbatch script, pickles, logs, the local controller); resilient
adds what it lacks: the warning signal resilient listens for, `--requeue` so SLURM may bring
the job back, and a time limit for the local executor (submitit's default kills it at 2 min).
Jobs log submitit's own messages from warnings up (SUBMITIT_LOG_LEVEL, unless set): its INFO
lines would mix into the job's output what `events.jsonl` tells better.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit
from submitit.local.local import LocalJob

from ..requeue import SIGNAL_DELAY_ENV
from ..rundir import current_umask
from ..settings import node_range, signal_name
from ..slurm import missing_submit_commands
from ._errors import SlurmUnavailable

if TYPE_CHECKING:  # only annotations: JobOptions imports loop, hence torch, which `resilient status` never needs
    from ._options import JobOptions

_SUBMITIT_LOG_LEVEL = ("SUBMITIT_LOG_LEVEL", "WARNING")


def require_slurm() -> None:
    """SlurmUnavailable unless this machine can submit SLURM jobs."""
    missing = missing_submit_commands()
    if missing:
        raise SlurmUnavailable(f"SLURM is not available here (no {' or '.join(missing)} on PATH)")


def signal_option(options: JobOptions) -> str:
    """The value of sbatch's --signal: the warning signal, `signal_delay_s` before the end."""
    return f"{signal_name(options.warning_signal, name='warning_signal')}@{options.signal_delay_s}"


CONTROLLER_LOG = "controller.log"


class _DetachedLocalExecutor(submitit.LocalExecutor):
    """submitit's local executor, with its controller detached from the submitting process.

    submitit starts the controller with the submitter's stdin, stdout and stderr, in its process
    group. Then a pipe reading the submitter's output (CI, `resilient submit ... | tee`) stays
    open until the job ends, and Ctrl-C on `resilient submit --follow` would interrupt the
    training itself. Here the controller gets its own session and writes to
    `<folder>/controller.log`; the environment is the one submitit's controller reads.
    """

    def _submit_command(self, command: str) -> LocalJob[object]:
        tasks = self.parameters.get("tasks_per_node", 1)
        env = dict(os.environ)
        env.update(
            SUBMITIT_LOCAL_NTASKS=str(tasks),
            SUBMITIT_LOCAL_COMMAND=command,
            SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * self.parameters["timeout_min"])),
            SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(self.parameters["signal_delay_s"])),
            SUBMITIT_LOCAL_NODEID="0",
            SUBMITIT_LOCAL_JOB_NUM_NODES="1",
            SUBMITIT_STDERR_TO_STDOUT="",
            SUBMITIT_EXECUTOR="local",
            SUBMITIT_LOCAL_WITH_SHELL="",
            CUDA_VISIBLE_DEVICES=",".join(str(gpu) for gpu in range(self.parameters.get("gpus_per_node", 0))),
        )
        env.setdefault(*_SUBMITIT_LOG_LEVEL)
        descriptor = os.open(self.folder / CONTROLLER_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(descriptor, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "submitit.local._local", str(self.folder)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                umask=current_umask() | 0o002,  # whatever the shell's umask, what the job writes is not world-writable
            )
        return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=list(range(tasks)))


def _slurm_parameters(options: JobOptions, name: str) -> dict[str, Any]:
    fewest, most = node_range(options.nodes)
    # A range (one task per node, see check_nodes) reaches sbatch as an additional parameter,
    # which replaces submitit's own --nodes line, and without --ntasks-per-node, with which
    # sbatch would allocate only the fewest nodes; srun then starts a task on every node the job
    # got. submitit's `nodes` stays a number: it counts the tasks it expects from it.
    tasks = {"ntasks_per_node": options.tasks_per_node} if fewest == most else {"srun_args": ["--ntasks-per-node=1"]}
    nodes = {} if fewest == most else {"nodes": f"{fewest}-{most}"}
    parameters: dict[str, Any] = {
        "job_name": name,
        "nodes": fewest,
        **tasks,
        "time": options.timeout_min,
        "signal_delay_s": options.signal_delay_s,
        "additional_parameters": {"requeue": True, "signal": signal_option(options), **nodes,
                                  **options.slurm_options},
        "setup": [f"export {SIGNAL_DELAY_ENV}={options.signal_delay_s}",
                  "export {0}=${{{0}:-{1}}}".format(*_SUBMITIT_LOG_LEVEL)],
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
    return parameters


def make_executor(options: JobOptions, folder: Path, name: str, array_parallelism: int | None = None) -> submitit.Executor:
    """The executor to submit with; SubmissionError for a SLURM job on a machine without SLURM.

    `array_parallelism`: for a SLURM array (a sweep), how many of its tasks may run at once (%N).
    """
    if options.executor == "debug":
        return submitit.DebugExecutor(folder)
    if options.executor == "local":
        executor = _DetachedLocalExecutor(folder)
        executor.update_parameters(
            tasks_per_node=options.tasks_per_node,
            gpus_per_node=options.gpus_per_node,
            timeout_min=options.timeout_min,
            signal_delay_s=options.signal_delay_s,
        )
        return executor
    require_slurm()
    slurm = submitit.SlurmExecutor(folder)
    slurm.update_parameters(**_slurm_parameters(options, name))
    if array_parallelism is not None:
        slurm.update_parameters(array_parallelism=array_parallelism)
    return slurm


class _ScriptWriter(submitit.SlurmExecutor):
    """A SLURM executor that only writes batch scripts, so a dry run needs no SLURM on this machine.

    submitit refuses to make a SlurmExecutor where `srun` is missing, by asking `affinity()`.
    """

    @classmethod
    def affinity(cls) -> int:
        return 1


def batch_script(options: JobOptions, folder: Path, name: str, array: tuple[int, int] | None = None) -> str:
    """The sbatch script a SLURM submission of these options would use (`--dry-run`).

    submitit builds it only inside `submit()`; its two private hooks are the one way to see the
    very text it would hand to sbatch, rather than an imitation that could drift from it.
    `array`: (tasks, how many at once) for a sweep's array, whose count submitit sets as it
    submits (`map_count`, as its own array submission does).
    """
    writer = _ScriptWriter(folder)
    writer.update_parameters(**_slurm_parameters(options, name))
    if array is not None and array[0] > 1:  # submitit submits an array of one as a plain job
        writer.update_parameters(array_parallelism=array[1])
        writer.parameters["map_count"] = array[0]
    return writer._make_submission_file_text(writer._submitit_command_str, "dry-run")  # type: ignore[attr-defined]
