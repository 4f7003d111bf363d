"""Reading a job file: its data, the line of every key, and the mistakes YAML lets through.

PyYAML keeps the last of two equal keys without a word; in a job file that silently drops a
setting (two `resources:` blocks, say), so duplicates are found on the composed node tree,
which still has both, before it is turned into data. The same walk records each key's line for
error messages.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from ._errors import ConfigError, KeyPath, format_key, kind

_MERGE_TAG = "tag:yaml.org,2002:merge"


def parse(text: str, source: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    """The top-level mapping of `text` and the 1-based line of each key path (() is the file).

    `source` names the file in errors.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError(
                "the file is empty; a job file needs at least 'entrypoint: package.module:function'",
                origin=source,
            )
        lines: dict[KeyPath, int] = {(): _line(root)}
        _record(root, (), lines, source)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "unreadable"
        if error.context and error.context_mark is not None:
            problem += f" ({error.context} at line {error.context_mark.line + 1})"
        if mark is None:
            raise ConfigError(f"invalid YAML: {problem}", origin=source) from None
        line = mark.line + 1
        raise ConfigError(f"invalid YAML: {problem}", origin=f"{source}:{line}", line=line) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML: {error}", origin=source) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        line = lines[()]
        raise ConfigError(
            f"the file must be a mapping of keys (entrypoint: ..., args: ...), not {kind(data)}",
            origin=f"{source}:{line}", line=line,
        )
    return data, lines


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
            key = SafeConstructor().construct_document(key_node)
            child = (*path, key)
            if child in lines:
                line = _line(key_node)
                raise ConfigError(
                    f"duplicate key (also at line {lines[child]}); YAML would keep only the last",
                    origin=f"{source}:{line}", key=format_key(child), line=line,
                )
            lines[child] = _line(key_node)
            _record(value_node, child, lines, source)
