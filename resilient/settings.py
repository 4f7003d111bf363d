"""A job's settings, each rule written once: the limits, the checks and the normalisations.

Settings arrive three ways: the `@resilient.job` decorator (`JobOptions`), a job file (the
pydantic models in `config/`, which check the file's shape and then call these checks) and
`Run(...)` itself (the warning signal, the requeue bounds). With one rule and one message per
setting here, the three cannot drift apart. Standard library only, so that every layer, the
lowest included, may import it.

A refused count, batch-script value or node count raises `InvalidSetting` (a ValueError;
`InvalidSettingType`, also a TypeError, for a value of the wrong type): its text names the
setting, and its `problem` says what is wrong without the name, for the job file, whose errors
name the key where the value was written. The warning signal's errors name it as `name=value`.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

# Upper bounds far beyond any real node: they turn a typo (an extra three zeros) into an error
# instead of a job that never starts, or a million processes on this machine.
MAX_NODES = 10_000
MAX_TASKS_PER_NODE = 1024
MAX_GPUS_PER_NODE = 64
MAX_CPUS_PER_TASK = 1024
MAX_MEM_GB = 65_536
MAX_TIME_MIN = 365 * 24 * 60  # a time limit beyond a year is a typo
# More processes than this per CPU would only take turns on the cores (and a typo such as
# tasks_per_node: 1000000 would start that many processes here).
LOCAL_TASKS_PER_CPU = 4
# The most tasks one sweep may have: SLURM's default MaxArraySize is 1001 (indices 0 to 1000).
MAX_SWEEP_TASKS = 1000

# Values that end up in the generated batch script: plain tokens only, nothing a shell interprets.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=@%+/-]*$")
SAFE_CHARACTERS = SAFE_VALUE.pattern.strip("^$*")  # the character class, for messages

DEFAULT_WARNING_SIGNAL = "USR2"
RUNS_DIR = Path("runs")  # where run directories go by default (runs/<name>)

SHOWN_CHARACTERS = 80  # of a value quoted in an error message


def cut(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """`text`, or its first `limit` characters and its length.

    Errors quote the value at fault, and one line of an error must stay readable even when the
    value is a 100,000-character string pasted by mistake.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def shown(value: object) -> str:
    """`repr(value)` for an error message, cut when long."""
    return cut(repr(value))


class InvalidSetting(ValueError):
    """A setting's value breaks its rule; `problem` says how, without naming the setting."""

    def __init__(self, name: str, problem: str, message: str | None = None) -> None:
        super().__init__(message or f"{name} {problem}")
        self.name = name
        self.problem = problem


class InvalidSettingType(InvalidSetting, TypeError):
    """A setting's value is of the wrong type: a TypeError, as Python's own argument checks raise."""


def check_count(name: str, value: object, *, minimum: int, maximum: int | None = None,
                none_means: str | None = None) -> int | None:
    """An int in [minimum, maximum] (`bool` refused although it is an int); None too when
    `none_means` says what None stands for."""
    if value is None and none_means is not None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        alternative = f" or None ({none_means})" if none_means is not None else ""
        raise InvalidSettingType(name, f"must be an int >= {minimum}{alternative}, not {shown(value)}")
    if value < minimum:
        raise InvalidSetting(name, f"must be >= {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise InvalidSetting(name, f"must be <= {maximum}, not {value}")
    return value


def check_safe_text(name: str, value: object) -> str:
    """A value that goes into the batch script: a non-empty plain token (`SAFE_CHARACTERS`)."""
    if not isinstance(value, str):
        raise InvalidSettingType(name, f"must be a string, not {shown(value)}")
    if not value or not SAFE_VALUE.fullmatch(value):
        raise InvalidSetting(name, (
            f"{shown(value)} is refused: only {SAFE_CHARACTERS} may appear in a value written "
            "into the batch script"))
    return value


_NODE_RANGE = re.compile(r"(\d{1,9})-(\d{1,9})")


def node_range(value: object) -> tuple[int, int]:
    """`nodes` as (fewest, most): an int N is exactly N nodes, a string "MIN-MAX" a range.

    A range is `sbatch --nodes=MIN-MAX`: SLURM starts the job on as many nodes of the range as
    it can give, and a requeued job may come back on another number of them (the job resumes on
    whatever it got). Both ends are node counts, with the bounds of `check_count`.
    """
    match = _NODE_RANGE.fullmatch(value) if isinstance(value, str) else None
    if match is None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidSettingType("nodes", f"must be an int >= 1 or a range 'MIN-MAX' such as '1-2', not {shown(value)}")
    if match is None:
        assert isinstance(value, int)
        check_count("nodes", value, minimum=1, maximum=MAX_NODES)
        return value, value
    fewest, most = int(match[1]), int(match[2])
    for end in (fewest, most):
        try:
            check_count("nodes", end, minimum=1, maximum=MAX_NODES)
        except InvalidSetting as error:
            raise InvalidSetting("nodes", f"range {value!r}: {error.problem}") from None
    if fewest > most:
        raise InvalidSetting("nodes", f"range {value!r} ends below its start: write 'MIN-MAX' with MIN <= MAX")
    return fewest, most


def check_nodes(nodes: int | str, executor: str, tasks_per_node: int = 1) -> None:
    """Only SLURM spreads a job over several nodes; the other executors run on this one.

    A range runs one task per node: sbatch (22.05, measured in slurm/README.md) turns
    --ntasks-per-node into a fixed task count for MIN nodes and then allocates only MIN nodes,
    so a range is submitted without it, and SLURM reserves one task's CPUs on each node.
    """
    fewest, most = node_range(nodes)
    if most > 1 and executor != "slurm":
        problem = f"{nodes} nodes need executor slurm; the {executor} executor runs on one node"
        raise InvalidSetting("nodes", problem, problem)
    if fewest < most and tasks_per_node > 1:
        problem = (f"a node range ({nodes}) runs one task per node, not {tasks_per_node}: SLURM would "
                   "allocate only the fewest nodes; use a fixed node count for several tasks per node")
        raise InvalidSetting("nodes", problem, problem)


def check_fire_drill_step(value: object) -> int | None:
    """The training step at which a fire drill preempts the job once; None: no drill."""
    return check_count("fire_drill_step", value, minimum=1, none_means="no drill")


def run_dir_for(run_dir: str | os.PathLike[str] | None, name: str) -> Path:
    """The absolute run directory: `run_dir`, or `runs/<name>` under the current directory."""
    return Path(os.path.abspath(run_dir if run_dir is not None else RUNS_DIR / name))


# Signals that cannot serve as a warning: they cannot be caught, or they already mean something
# to the process (faults, job control, children, Ctrl-C) and catching them would change that.
_UNUSABLE = {
    signal.SIGKILL: "it cannot be caught",
    signal.SIGSTOP: "it cannot be caught",
    signal.SIGINT: "it is Ctrl-C, which resilient already handles",
    signal.SIGCHLD: "it reports child processes (DataLoader workers rely on it)",
    signal.SIGCONT: "it resumes stopped processes",
    signal.SIGTSTP: "it is job control", signal.SIGTTIN: "it is job control", signal.SIGTTOU: "it is job control",
    signal.SIGSEGV: "it reports a crash", signal.SIGBUS: "it reports a crash", signal.SIGFPE: "it reports a crash",
    signal.SIGILL: "it reports a crash", signal.SIGABRT: "it reports a crash", signal.SIGSYS: "it reports a crash",
    signal.SIGTRAP: "debuggers use it", signal.SIGPIPE: "it reports a closed pipe",
}


def signal_number(value: str | int, *, name: str) -> int:
    """`"USR2"`, `"SIGUSR2"` or `12` -> 12; an unknown or unusable signal is a ValueError naming `name`."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a signal name such as 'USR2' or a number, not {value!r}")
    if isinstance(value, int):
        try:
            member = signal.Signals(value)
        except ValueError:
            raise ValueError(f"{name}={value} is not a signal number on this system") from None
    elif isinstance(value, str):
        upper = value.strip().upper()
        member = getattr(signal.Signals, upper if upper.startswith("SIG") else "SIG" + upper, None)
        if member is None:
            raise ValueError(f"{name}={value!r:.40} is not a signal name (e.g. 'USR1', 'USR2', 'TERM')")
    else:
        raise TypeError(f"{name} must be a signal name such as 'USR2' or a number, not {value!r:.40}")
    if member in _UNUSABLE:
        raise ValueError(f"{name}={member.name} cannot be the warning signal: {_UNUSABLE[member]} (use USR1 or USR2)")
    return int(member)


def signal_name(value: str | int, *, name: str) -> str:
    """The warning signal as SLURM's options spell it (`sbatch --signal`, `scancel --signal`): "USR2"."""
    return signal.Signals(signal_number(value, name=name)).name.removeprefix("SIG")
