"""Errors in a job file, each one line that says where: the file and line, or the override.

Checks deep inside the loader know only the key path of a mistake (`resources.nodes`), not
where it was written; `Invalid` carries that path to the one place (`Origins`) that knows the
file's line numbers and which keys came from `-o key=value` overrides, so every check reports
positions the same way.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..settings import SHOWN_CHARACTERS, cut, shown

KeyPath = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Values quoted in messages are cut (`shown`); a message that is still this long quotes something
# whole that nobody cut, and loses its middle rather than fill a screen.
_LONGEST_MESSAGE = 600


class ConfigError(Exception):
    """A mistake in a job file or an override. str(error) is ONE line that names the key, e.g.
    "job.yaml:12: resources.nodes: must be >= 1, not 0" or
    "-o resources.nodes=0: resources.nodes: must be >= 1, not 0" or
    "job.yaml:3: reources: unknown key; did you mean 'resources'?" """

    def __init__(self, message: str, *, origin: str, key: str | None = None, line: int | None = None) -> None:
        # One line, always: a message quoting an exception or a value must not break the CLI's
        # one-error-per-line output (or a log line that a cluster script greps).
        self.message = _cut_middle(re.sub(r"\s*\n\s*", " ", message))
        self.origin = one_line(origin)
        self.key = key
        self.line = line
        super().__init__(": ".join(part for part in (self.origin, key, self.message) if part))


class Invalid(Exception):
    """A mistake at a key path, not yet located in the file or the overrides."""

    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message


def one_line(text: str) -> str:
    """`text` itself when it is printable on one line, else its repr (which is)."""
    return text if text.isprintable() else repr(text)


def override_label(text: str) -> str:
    """How errors cite the override `-o text`: on one line, and cut when long."""
    return f"-o {cut(one_line(text))}"


def _cut_middle(message: str) -> str:
    """`message`, or its start and its end (which says what to do) around a note of the cut."""
    if len(message) <= _LONGEST_MESSAGE:
        return message
    head, tail = message[: _LONGEST_MESSAGE // 2], message[-_LONGEST_MESSAGE // 4:]
    return f"{head}... ({len(message) - len(head) - len(tail)} characters cut) ...{tail}"


def format_key(path: KeyPath) -> str:
    """("checkpoint", 1, "save_top_k") -> "checkpoint[1].save_top_k"; odd keys are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part) and len(part) <= SHOWN_CHARACTERS:
            text += f".{part}" if text else part
        else:
            text += f"[{shown(part)}]"
    return text


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
          dict: "a mapping", list: "a list", type(None): "null"}


def kind(value: object) -> str:
    """What YAML made of a value, in the words of someone who wrote the YAML."""
    return _KINDS.get(type(value), type(value).__name__)


def given(value: object) -> str:
    """"'3' (a string)": the value and its kind, short enough for one line."""
    if value is None:
        return "null"
    return f"{shown(value)} ({kind(value)})"


def suggestion(word: object, choices: Iterable[str]) -> str:
    """"did you mean 'x'?" when a choice is close, else the list of choices."""
    options = sorted(choices)
    close = difflib.get_close_matches(str(word), options, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "expected one of: " + ", ".join(options) if options else "nothing is expected here"


@dataclass
class Origins:
    """Where each key of the resolved config came from: a line of `source`, or an override."""

    source: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    overrides: dict[KeyPath, str] = field(default_factory=dict)

    def locate(self, problem: Invalid) -> ConfigError:
        """The error for `problem`, placed at its key or else at its nearest written ancestor
        (so a missing key is reported at the mapping that lacks it)."""
        origin, line = self._where(problem.path)
        return ConfigError(problem.message, origin=origin, key=format_key(problem.path) or None, line=line)

    def first(self, problems: Iterable[Invalid]) -> ConfigError:
        """The error for the problem written first; those from overrides come after the file's."""
        def position(problem: Invalid) -> float:
            line = self._where(problem.path)[1]
            return float("inf") if line is None else line

        return self.locate(min(problems, key=position))

    def where(self, path: KeyPath) -> str:
        """Where the key at `path` (or its nearest written ancestor) was written: `file:line` or `-o ...`."""
        return self._where(path)[0]

    def _where(self, path: KeyPath) -> tuple[str, int | None]:
        for depth in range(len(path), -1, -1):
            prefix = path[:depth]
            if prefix in self.overrides:
                return self.overrides[prefix], None
            if prefix in self.lines:
                return f"{self.source}:{self.lines[prefix]}", self.lines[prefix]
        return self.source, None
