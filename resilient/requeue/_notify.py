"""Telling someone how a start of the job ended: a command and/or a webhook, never at the job's cost.

A preempted job that requeues itself at 3 a.m., or a run that gave up after its last requeue,
is news its owner otherwise finds only by polling `resilient status`. `Notify` sends the run's
one-line status to a command (argv, never a shell) and/or a webhook (a JSON POST whose `text`
is that line, which Slack and Mattermost incoming webhooks show as it is).

When: rank 0 alone, from `conclude`, after the state is in status.json and the end event in
events.jsonl, so nothing is lost if the notifier hangs or the job is killed meanwhile. Before a
requeue too, which is why it is bounded by the job's end. Notifying after the requeue request
was considered and refused: on SLURM the requeue is the job's own `scontrol requeue`, and SLURM
kills the job's processes the moment that request succeeds (with cgroup process tracking, a
child that left the session or daemonised goes too), so a notification sent after it would
race the kill; handing it to the next start would tell of a requeue hours late, after the queue.
So it is sent before, and may use at most the time left before the job's end (`Host.end_time()`,
which a preemption moves to the end of its grace time) minus `END_MARGIN_S` for the requeue and
the exit; with no time left it is skipped and the `notify_failed` event says so. The same order
and bound hold on every host (the local executor restarts the job after it exits, and a plain
process is never killed), so there is one rule to know, and a slow notifier never turns a
requeue into a kill.

Its failure never changes the job: a command that cannot start, exits non-zero or outlives the
timeout (then its whole process group is killed), a webhook that refuses, answers an error or
stays silent: one warning line on the rank's stderr and a `notify_failed` event, and the job
leaves with the state and exit code it had. The webhook URL usually holds a secret (Slack's
does), so messages name only its scheme and host.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._version import __version__
from ..rundir import DamagedFile, Event, State, Vocabulary, append_event, read_record
from ..settings import SHOWN_CHARACTERS, InvalidSetting, InvalidSettingType, cut, shown
from ..slurm import SlurmCommandError
from ._host import Host

NOTIFY_STATES = (State.REQUEUED, State.GAVE_UP, State.FAILED, State.COMPLETED, State.CANCELLED, State.STOPPED)
DEFAULT_NOTIFY_ON = NOTIFY_STATES[:4]
DEFAULT_NOTIFY_TIMEOUT_S = 10
MAX_NOTIFY_TIMEOUT_S = 300  # beyond any webhook's answer; a larger value is a typo (minutes for seconds)
END_MARGIN_S = 10.0  # left before the job's end for `scontrol requeue` and the process's exit
_MAX_URL = 2048
# A problem's line quotes a program or URL already cut to `SHOWN_CHARACTERS`; the whole line is cut
# only at a length that keeps what follows the quote (why it failed) in every such line.
_SHOWN_PROBLEM = 4 * SHOWN_CHARACTERS
_MAX_STATUS_LINE = 500  # a chat message, not a traceback


class Via(Vocabulary):
    """How a notification goes out, as `notify_failed` events name it."""

    COMMAND = "command"
    WEBHOOK = "webhook"


def notify_command(value: object) -> tuple[str, ...]:
    """An argv list, or a string split as a POSIX shell splits words (no shell runs it)."""
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as error:
            raise InvalidSetting("command", f"{shown(value)} cannot be split into words: {error}") from None
    elif isinstance(value, (list, tuple)):
        argv = list(value)
        for word in argv:
            if not isinstance(word, str):
                raise InvalidSettingType("command", f"words must be strings, not {shown(word)}")
    else:
        raise InvalidSettingType("command", f"must be a list of words or a string, not {shown(value)}")
    if not argv or not argv[0]:
        raise InvalidSetting("command", "is empty: name a program, e.g. ['notify-send', 'training']")
    if any("\0" in word for word in argv):
        raise InvalidSetting("command", f"{shown(value)} holds a NUL character, which no argument can")
    return tuple(argv)


def check_webhook(value: object) -> str:
    """An absolute http(s) URL with a host, on one line."""
    if not isinstance(value, str):
        raise InvalidSettingType("webhook", f"must be a URL string, not {shown(value)}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as error:
        raise InvalidSetting("webhook", f"{shown(value)} is not a URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise InvalidSetting("webhook", f"{shown(value)} has {scheme}: only http:// and https:// URLs are posted to")
    if not parts.hostname:
        raise InvalidSetting("webhook", f"{shown(value)} names no host")
    if len(value) > _MAX_URL or not value.isprintable() or any(character.isspace() for character in value):
        raise InvalidSetting("webhook", f"{shown(value)} is refused: a URL is one word of at most {_MAX_URL} "
                                        "printable characters")
    return value


def notify_states(value: object) -> frozenset[State]:
    """Which ends of a start to notify of: a non-empty list of state names."""
    names = ", ".join(NOTIFY_STATES)
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidSettingType("on", f"must be a list of states ({names}), not {shown(value)}")
    states = set()
    for name in value:
        if name not in NOTIFY_STATES:
            hint = " (a run that finished is 'completed')" if name == "finished" else ""
            raise InvalidSetting("on", f"{shown(name)} is not a state to notify of{hint}: one of {names}")
        states.add(State(name))
    if not states:
        raise InvalidSetting("on", f"is empty: list some of {names}, or leave notify out")
    return frozenset(states)


def check_notify_timeout(value: object) -> float:
    """Seconds a notification may take, from more than 0 to MAX_NOTIFY_TIMEOUT_S."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSettingType("timeout", f"must be a number of seconds, not {shown(value)}")
    if not 0 < value <= MAX_NOTIFY_TIMEOUT_S:
        raise InvalidSetting("timeout", f"must be more than 0 and at most {MAX_NOTIFY_TIMEOUT_S} seconds, not {value}")
    return float(value)


@dataclass(frozen=True)
class Notify:
    """Who to tell when a start of the run ends in one of the states `on`.

    `command`: argv (or a string split into words as a shell would, without running one); it
    gets the facts in `RESILIENT_*` environment variables. `webhook`: an http(s) URL that gets
    them as a JSON POST. At least one of the two. `timeout_s`: the most either may take.
    """

    command: str | Sequence[str] | None = None  # kept as a tuple of words
    webhook: str | None = None
    on: Collection[str] = DEFAULT_NOTIFY_ON  # kept as a frozenset of States
    timeout_s: float = DEFAULT_NOTIFY_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.command is None and self.webhook is None:
            raise InvalidSetting("notify", "needs a command, a webhook or both")
        if self.command is not None:
            object.__setattr__(self, "command", notify_command(self.command))
        if self.webhook is not None:
            check_webhook(self.webhook)
        object.__setattr__(self, "on", notify_states(self.on))
        object.__setattr__(self, "timeout_s", check_notify_timeout(self.timeout_s))

    def send(self, run_dir: Path, host: Host, state: State, event: Event, message: str, *,
             step: int | None = None) -> None:
        """Notify of `state` (recorded as `event`) if asked to; any failure is a warning and an event,
        never an exception."""
        if state not in self.on:
            return
        try:
            self._send(run_dir, host, state, payload(run_dir, host.job_id, state, event, message, step=step))
        except Exception as error:  # the notifier's own trouble (no room left for its event, say) stays its own
            _warn(state, None, f"{type(error).__name__}: {error}")

    def _send(self, run_dir: Path, host: Host, state: State, facts: dict[str, Any]) -> None:
        budget, why_none = _time_left(host, self.timeout_s)
        if why_none is not None:
            _failed(run_dir, host, state, None, f"skipped: {why_none}")
            return
        deadline = time.monotonic() + budget
        problems: dict[Via, str | None] = {}
        process = webhook = None
        if self.command is not None:
            process, problems[Via.COMMAND] = _start(self.command, environment(facts))
        if self.webhook is not None:
            webhook = _Post(self.webhook, facts, budget)
        if process is not None:
            problems[Via.COMMAND] = _finish(process, deadline)
        if webhook is not None:
            problems[Via.WEBHOOK] = webhook.result(deadline)
        for via, problem in problems.items():
            if problem is not None:
                _failed(run_dir, host, state, via, problem)


def payload(run_dir: Path, job_id: str | None, state: State, event: Event, message: str, *,
            step: int | None = None) -> dict[str, Any]:
    """What a notification says: `text` is the one-line status, the rest the facts behind it."""
    name = _run_name(run_dir)
    said = " ".join(message.replace(f"{run_dir}{os.sep}", "").split())
    what = f"{state} at step {step}" if state == State.COMPLETED and step is not None else str(state)
    if said:
        what += f": {said.removeprefix(f'{state}: ')}"
    text = _cut_line(f"resilient: {name}" + (f" (job {job_id})" if job_id else "") + f" {what}")
    return {"text": text, "event": str(event), "state": str(state), "run_dir": str(run_dir), "job_id": job_id,
            "name": name, "message": message, "step": step}


def environment(facts: Mapping[str, Any], base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The command's environment: the job's own, and the payload's facts as RESILIENT_* variables."""
    variables = {"RESILIENT_EVENT": facts["event"], "RESILIENT_STATE": facts["state"],
                 "RESILIENT_RUN_DIR": facts["run_dir"], "RESILIENT_JOB_ID": facts["job_id"] or "",
                 "RESILIENT_NAME": facts["name"], "RESILIENT_MESSAGE": facts["message"],
                 "RESILIENT_STATUS_LINE": facts["text"],
                 "RESILIENT_STEP": "" if facts["step"] is None else str(facts["step"])}
    return {**base, **{key: value.replace("\0", "") for key, value in variables.items()}}


def _cut_line(text: str) -> str:
    return text if len(text) <= _MAX_STATUS_LINE else text[:_MAX_STATUS_LINE - 3] + "..."


def time_left(end_time: float | None, timeout_s: float, now: float) -> float:
    """Seconds a notification may take: its timeout, less when the job's end comes sooner (<= 0: none)."""
    if end_time is None:
        return timeout_s
    return min(timeout_s, end_time - END_MARGIN_S - now)


def _run_name(run_dir: Path) -> str:
    """The job's name as submitted (job.json), else the run directory's own name."""
    try:
        record = read_record(run_dir)
    except DamagedFile:
        record = None
    return record.name if record is not None else run_dir.name


def _time_left(host: Host, timeout_s: float) -> tuple[float, str | None]:
    """The budget, or why there is none."""
    try:
        end = host.end_time()
    except SlurmCommandError as error:
        return 0.0, f"the job's end time could not be read ({error})"
    now = time.time()
    budget = time_left(end, timeout_s, now)
    if budget > 0:
        return budget, None
    assert end is not None  # with no end, the budget is the timeout, which is > 0
    left = f"ends in {end - now:.0f} s" if end > now else "was due to end already"
    return 0.0, f"the job {left}; {END_MARGIN_S:.0f} s are kept for the requeue and the exit"


def _start(argv: Sequence[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """The command started in its own process group (so that a timeout ends all it started)."""
    try:
        return subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, start_new_session=True), None
    except OSError as error:
        return None, f"{shown(argv[0])} could not start: {error.strerror or error}"


def _finish(process: subprocess.Popen[bytes], deadline: float) -> str | None:
    """Wait for the command until the deadline; past it (or interrupted: a second Ctrl-C), kill its group."""
    program = shown(process.args[0] if isinstance(process.args, list) else process.args)
    try:
        code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return f"{program} was still running at the timeout and was killed"
    finally:
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    if code != 0:
        ended = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        return f"{program} {ended}"
    return None


class _Post:
    """A JSON POST on a daemon thread: one that hangs past the deadline is left behind, not waited for."""

    def __init__(self, url: str, facts: Mapping[str, Any], timeout_s: float) -> None:
        parts = urlsplit(url)
        self._where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # the path may be a secret
        self._problem: str | None = None
        body = json.dumps(facts).encode()
        self._thread = threading.Thread(target=self._post, args=(url, body, timeout_s), daemon=True,
                                        name="resilient-webhook")
        self._thread.start()

    def _post(self, url: str, body: bytes, timeout_s: float) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"resilient/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read(64 * 1024)
        except urllib.error.HTTPError as error:
            self._problem = f"{self._where} answered HTTP {error.code} {error.reason}"
        except urllib.error.URLError as error:
            self._problem = f"{self._where} could not be reached: {error.reason}"
        except Exception as error:  # whatever goes wrong, it is the notification's failure, not the job's
            self._problem = f"{self._where}: {type(error).__name__}: {error}"

    def result(self, deadline: float) -> str | None:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return f"{self._where} gave no answer before the timeout"
        return self._problem


def _warn(state: State, via: Via | None, line: str) -> None:
    print(f"resilient: warning: notification of {state}" + (f" by {via}" if via else "") + f" failed: {line}",
          file=sys.stderr, flush=True)


def _failed(run_dir: Path, host: Host, state: State, via: Via | None, problem: str) -> None:
    line = cut(" ".join(problem.split()), _SHOWN_PROBLEM)
    _warn(state, via, line)
    append_event(run_dir, Event.NOTIFY_FAILED, job_id=host.job_id, state=state,
                 **({} if via is None else {"via": via}), error=line)
