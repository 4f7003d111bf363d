"""The job file's value types that plain pydantic types cannot say: counts, tokens, durations, signals.

Each type refuses a bad value with a message that says what would be right, and keeps the value
as written (`"4h"` stays `"4h"`) so the resolved config saved in the run directory reads like the
file; `to_minutes`/`to_seconds` convert when the value is used. pydantic checks the value's type
(the file's shape); its rule is the one in `resilient.settings`, which `JobOptions` applies too,
so a value accepted here is also accepted there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

from pydantic import AfterValidator, PlainValidator, WithJsonSchema

from ..requeue import (
    MAX_NOTIFY_TIMEOUT_S,
    NOTIFY_STATES,
    check_notify_timeout,
    check_webhook,
    notify_command,
    notify_states,
)
from ..rules import parse_duration
from ..settings import (
    MAX_NODES,
    MAX_TIME_MIN,
    SAFE_VALUE,
    InvalidSetting,
    check_count,
    check_fire_drill_step,
    check_safe_text,
    node_range,
    signal_number,
)
from ._errors import given, shown

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENTRYPOINT = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
_OPTION_NAME = re.compile(r"[a-z][a-z0-9_-]*")

# sbatch options resilient writes itself: setting them again would contradict the job's own
# settings (or break requeue and logging), so each is refused with the key to use instead.
_RESERVED_OPTIONS = {
    "job-name": "use name",
    "time": "use resources.time",
    "nodes": "use resources.nodes",
    "ntasks-per-node": "use resources.tasks_per_node",
    "gpus-per-node": "use resources.gpus_per_node",
    "cpus-per-task": "use resources.cpus_per_task",
    "mem": "use resources.mem_gb",
    "partition": "use slurm.partition",
    "account": "use slurm.account",
    "qos": "use slurm.qos",
    "signal": "use slurm.signal and slurm.signal_delay",
    "requeue": "resilient always requeues; bound it with requeue.max_requeues",
    "no-requeue": "resilient always requeues; bound it with requeue.max_requeues",
    "output": "resilient writes the logs under run_dir",
    "error": "resilient writes the logs under run_dir",
    "open-mode": "resilient appends to the logs so that a requeued job keeps its history",
    "array": "a sweep (the job file's sweep key) is submitted as an array",
}


def _text(pattern: re.Pattern[str], explanation: str) -> Any:
    """A string type matching `pattern`, refused with `explanation` (the schema keeps the pattern)."""
    def check(value: str) -> str:
        if not value or not pattern.fullmatch(value):
            raise ValueError(f"{shown(value)} is refused: {explanation}")
        return value

    anchored = pattern.pattern if pattern.pattern.startswith("^") else f"^(?:{pattern.pattern})$"
    schema = {"type": "string", "pattern": anchored, "minLength": 1}
    return Annotated[str, AfterValidator(check), WithJsonSchema(schema)]


def _reported(check: Callable[[Any], object]) -> Callable[[Any], Any]:
    """A validator that applies `check` and keeps the value as written.

    pydantic reports only a ValueError as a validation error, and the error names the key, so
    a settings rule's refusal is said without the setting's own name (`InvalidSetting.problem`).
    """
    def validate(value: Any) -> Any:
        try:
            check(value)
        except InvalidSetting as error:
            raise ValueError(error.problem) from None
        except TypeError as error:
            raise ValueError(str(error)) from None
        return value

    return validate


def _scalar(check: Callable[[Any], object], schema: dict[str, Any]) -> Any:
    """A value of several YAML types, kept as written after `check` accepts it."""
    return Annotated[Any, PlainValidator(_reported(check)), WithJsonSchema(schema)]


def count(minimum: int, maximum: int | None = None) -> Any:
    """An integer (strictly: the file's shape) from `minimum` to `maximum`, by `check_count`'s rule."""
    schema = {"type": "integer", "minimum": minimum, **({} if maximum is None else {"maximum": maximum})}
    check = partial(check_count, "value", minimum=minimum, maximum=maximum)
    return Annotated[int, AfterValidator(_reported(check)), WithJsonSchema(schema)]


def _whole(value: Any, unit: timedelta, unit_name: str, key: str, example: str) -> int:
    """An int already in `unit`s, or a duration that is a whole number of them."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"must be >= 1 {unit_name}, not {shown(value)}")
        return value
    if not isinstance(value, str):
        raise TypeError(f"must be {unit_name}s (an integer) or a duration such as {example}, not {given(value)}")
    duration = parse_duration(value, name=key)
    if duration % unit:
        raise ValueError(f"{shown(value)} is not a whole number of {unit_name}s")
    return duration // unit


def to_minutes(value: Any) -> int:
    """`resources.time` in minutes (SLURM's unit of time limits): an int is minutes, as for sbatch --time."""
    minutes = _whole(value, timedelta(minutes=1), "minute", "time", "'4h' or '1h30m'")
    if minutes > MAX_TIME_MIN:
        raise ValueError(f"must be at most 365 days ({MAX_TIME_MIN} minutes), not {shown(value)}")
    return minutes


def to_seconds(value: Any) -> int:
    """`slurm.signal_delay` in seconds: an int is seconds, or a duration such as "2m"."""
    return _whole(value, timedelta(seconds=1), "second", "signal_delay", "'2m'")


def to_notify_seconds(value: Any) -> float:
    """`notify.timeout` in seconds: a number is seconds, or a duration such as "30s" or "1m"."""
    if isinstance(value, str):
        value = parse_duration(value, name="timeout").total_seconds()
    return check_notify_timeout(value)


def _check_signal(value: Any) -> None:
    signal_number(value, name="signal")


def _check_option_name(name: str) -> str:
    advice = _RESERVED_OPTIONS.get(name.replace("_", "-"))
    if advice is not None:
        raise ValueError(f"--{name} is set by resilient; {advice}")
    return name


def _check_option_value(value: Any) -> None:
    if value is True or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return
    if value is False:
        raise ValueError("false is not an sbatch value; write true for a flag, or leave the option out")
    if not isinstance(value, str):
        raise TypeError(f"must be a string, a number or true (a flag), not {given(value)}")
    check_safe_text("value", value)


Name = _text(NAME, "a name is a letter or digit, then letters, digits, '_', '.' or '-', at most 64 in all")
Entrypoint = _text(_ENTRYPOINT, "write 'package.module:function', e.g. 'examples.train:main'")
SafeToken = Annotated[str, AfterValidator(_reported(partial(check_safe_text, "value"))), WithJsonSchema(
    {"type": "string", "pattern": SAFE_VALUE.pattern, "minLength": 1})]
OptionName = Annotated[
    _text(_OPTION_NAME, "an sbatch option name is lowercase letters, digits, '_' and '-'"),
    AfterValidator(_check_option_name),
]
OptionValue = _scalar(_check_option_value, {"anyOf": [
    {"type": "string", "pattern": SAFE_VALUE.pattern, "minLength": 1}, {"type": "number"}, {"const": True}]})
Minutes = _scalar(to_minutes, {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]})
Seconds = _scalar(to_seconds, {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]})
Nodes = _scalar(node_range, {"anyOf": [
    {"type": "integer", "minimum": 1, "maximum": MAX_NODES}, {"type": "string", "pattern": r"^[0-9]+-[0-9]+$"}]})
Signal = _scalar(_check_signal, {"anyOf": [{"type": "string"}, {"type": "integer"}]})
FireDrillStep = Annotated[int, AfterValidator(_reported(check_fire_drill_step)),
                          WithJsonSchema({"type": "integer", "minimum": 1})]
NotifyCommand = _scalar(notify_command, {"anyOf": [
    {"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]})
Webhook = _scalar(check_webhook, {"type": "string", "pattern": "^https?://"})
NotifyStates = _scalar(notify_states, {"type": "array", "items": {"enum": [str(state) for state in NOTIFY_STATES]},
                                       "minItems": 1})
NotifyTimeout = _scalar(to_notify_seconds, {"anyOf": [
    {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_NOTIFY_TIMEOUT_S}, {"type": "string"}]})
