"""Reading a job file: its data, the line of every key, and the mistakes YAML lets through.

PyYAML keeps the last of two equal keys without a word; in a job file that silently drops a
setting (two `resources:` blocks, say), so duplicates are found on the composed node tree,
which still has both, before it is turned into data. The same walk records each key's line for
error messages.

A job file comes from anyone who can hand you a YAML file, and PyYAML trusts its input in ways
that crash or stall a loader: an alias inside the node it names (`args: &a {lr: *a}`) makes a
cycle, a few hundred bytes of aliases of aliases expand to billions of values ("billion
laughs"), and thousands of nested brackets exhaust Python's stack. The loader here refuses each
while composing, where the cost is still one step per character of the file: a recursive alias,
more than `MAX_VALUES` values once aliases are expanded, more than `MAX_DEPTH` levels of
nesting. Every failure, including a control character or a number Python will not convert, is
one ConfigError with the file and line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from ._errors import ConfigError, KeyPath, format_key, kind, shown

MAX_VALUES = 10_000  # keys, values and list items, an alias counting as all it stands for
MAX_DEPTH = 64  # levels of nesting, through aliases too

_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_STR_TAG = "tag:yaml.org,2002:str"


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that a job file may not be (an alias bomb, say): said without "invalid YAML"."""


class _Composer(Composer):
    """PyYAML's composer, counting what every node and alias stands for as it goes."""

    def __init__(self) -> None:
        super().__init__()
        self._values = 0  # composed so far, each alias counting as all it stands for
        self._depth = 0  # of the node being composed
        self._deepest = 0  # within the node being composed, through aliases too
        self._open: set[str] = set()  # anchors of the nodes being composed
        self._expanded: dict[str, tuple[int, int]] = {}  # anchor -> (values, depth) it stands for

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open:
                raise _Refused(problem=(
                    f"the alias *{event.anchor} lies inside the value it names, so that value "
                    "would never end"), problem_mark=event.start_mark)
            node = super().compose_node(parent, index)  # an undefined alias fails here
            values, depth = self._expanded[event.anchor]
            self._count(values, self._depth + depth, event)
            return node
        self._depth += 1
        self._count(1, self._depth, event)
        first, outer, self._deepest = self._values - 1, self._deepest, self._depth
        if event.anchor is not None:
            self._open.add(event.anchor)
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._open.discard(event.anchor)
            self._expanded[event.anchor] = (self._values - first, self._deepest - self._depth + 1)
        self._deepest = max(outer, self._deepest)
        self._depth -= 1
        return node

    def _count(self, values: int, depth: int, event: yaml.Event) -> None:
        self._values += values
        self._deepest = max(self._deepest, depth)
        if depth > MAX_DEPTH:
            raise _Refused(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=event.start_mark)
        if self._values > MAX_VALUES:
            raise _Refused(problem=(
                f"more than {MAX_VALUES} values, aliases (*name) counting as all they stand "
                "for; a job file this large is refused"), problem_mark=event.start_mark)


def _as_key(node: yaml.Node) -> yaml.Node:
    """A key written `on`, `off`, `yes` or `no` is that word, not the boolean YAML 1.1 reads:
    no key of a job file is a boolean, and `notify.on` is one of them (as in a CI workflow)."""
    if (isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG and node.style is None
            and node.value.lower() not in ("true", "false")):
        return yaml.ScalarNode(_STR_TAG, node.value, node.start_mark, node.end_mark)
    return node


class _Constructor(SafeConstructor):
    """SafeConstructor, with a scalar Python cannot convert (an integer of 5,000 digits, the
    date 2024-02-30) reported at its line rather than as a ValueError from deep inside, and
    keys read by `_as_key`."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        node.value = [(_as_key(key), value) for key, value in node.value]
        return super().construct_mapping(node, deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:
            reason = str(error).partition(";")[0]
            raise ConstructorError(problem=f"cannot read {shown(node.value)}: {reason}",
                                   problem_mark=node.start_mark) from None


class _Loader(Reader, Scanner, Parser, _Composer, _Constructor, Resolver):
    """yaml.SafeLoader with the bounded composer and the careful constructor."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Composer.__init__(self)
        _Constructor.__init__(self)
        Resolver.__init__(self)


def parse(text: str, source: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    """The top-level mapping of `text` and the 1-based line of each key path (() is the file).

    `source` names the file in errors.
    """
    lines: dict[KeyPath, int] = {}

    def record(root: yaml.Node | None) -> None:
        if root is None:
            raise ConfigError(
                "the file is empty; a job file needs at least 'entrypoint: package.module:function'",
                origin=source,
            )
        lines[()] = _line(root)
        _record(root, (), lines, source)

    data = _load(text, source, inspect=record)
    if not isinstance(data, dict):
        line = lines[()]
        raise ConfigError(
            f"the file must be a mapping of keys (entrypoint: ..., args: ...), not {kind(data)}",
            origin=f"{source}:{line}", line=line,
        )
    return data, lines


def parse_value(text: str, origin: str, key: str) -> Any:
    """One value given on the command line (`-o key=value`), read as the file's values are."""
    return _load(text, origin, key)


def _load(text: str, origin: str, key: str | None = None,
          inspect: Callable[[yaml.Node | None], None] | None = None) -> Any:
    """The data in `text`; every YAML failure is a ConfigError at its line.

    `key` is the key an override sets (None: `text` is the file). `inspect` sees the composed
    root node before it is turned into data, while merge keys are still as written (turning
    them into data copies the merged keys into the node).
    """
    invalid = "invalid YAML" if key is None else "the value is not valid YAML"
    try:
        loader = _Loader(text)
    except ReaderError as error:  # PyYAML gives the character's code point, and no line
        character = chr(error.character)
        line = text.count("\n", 0, text.find(character)) + 1
        raise _error(f"{invalid}: the character {character!r} (U+{error.character:04X}) "
                     "is not allowed in YAML", origin, key, line) from None
    try:
        root = loader.get_single_node()
        if inspect is not None:
            inspect(root)
        return None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "unreadable"
        if error.context and error.context_mark is not None:
            problem += f" ({error.context} at line {error.context_mark.line + 1})"
        prefix = "" if isinstance(error, _Refused) else f"{invalid}: "
        raise _error(prefix + problem, origin, key, None if mark is None else mark.line + 1) from None
    except yaml.YAMLError as error:
        raise _error(f"{invalid}: {error}", origin, key, None) from None
    finally:
        loader.dispose()


def _error(message: str, origin: str, key: str | None, line: int | None) -> ConfigError:
    """A file's error names its line; an override's has only the one line it is."""
    if line is None or key is not None:
        return ConfigError(message, origin=origin, key=key)
    return ConfigError(message, origin=f"{origin}:{line}", line=line)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _record(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str) -> None:
    """Note the line of every key and list item under `node`; refuse duplicate keys."""
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = _line(item)
            _record(item, (*path, index), lines, source)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # complex keys fail at construction; merged keys have no line of their own
            key = _Constructor().construct_document(_as_key(key_node))
            child = (*path, key)
            if child in lines:
                line = _line(key_node)
                raise ConfigError(
                    f"duplicate key (also at line {lines[child]}); YAML would keep only the last",
                    origin=f"{source}:{line}", key=format_key(child), line=line,
                )
            lines[child] = _line(key_node)
            _record(value_node, child, lines, source)
