"""Checkpoint file names from Lightning-style templates such as ``"{epoch:02d}-{val_loss:.2f}"``.

Users port templates from Lightning and compare the resulting file names, so the expansion
reproduces Lightning's algorithm step for step (key regex, longest key first, ``name=``
insertion, missing metrics as 0). The only departure is safety: a checkpoint name is a single
path component, because retention deletes by name and must never reach outside ``dirpath``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# Lightning's key pattern: from "{" up to the first ":" or "}". It is deliberately naive (a
# "}" inside a format spec is not understood); matching it keeps names identical to Lightning's.
_KEY = re.compile(r"(\{.*?)[:\}]")


def _template_keys(template: str) -> list[str]:
    """Metric names referenced by ``template``, in order of appearance (duplicates kept)."""
    return [group[1:] for group in _KEY.findall(template)]


def expand(
    template: str, metrics: Mapping[str, object], *, auto_insert_metric_name: bool, equals: str
) -> str:
    """Fill ``template`` with ``metrics`` exactly as Lightning's ``_format_checkpoint_name``.

    Keys are rewritten to ``{0[name]}`` item lookups so that names containing dots or slashes
    ("val/loss") are looked up verbatim instead of as attributes. Longer keys go first so that
    "{epoch}" cannot clobber the prefix of "{epoch_test}". A "/" in an auto-inserted name
    becomes "_" (Lightning would create a subdirectory); the lookup still uses the real name.
    Raises ``ValueError`` naming ``filename`` when the template cannot be formatted.
    """
    values = dict(metrics)
    rewritten = template
    for group in sorted(_KEY.findall(template), key=len, reverse=True):
        name = group[1:]
        if auto_insert_metric_name:
            rewritten = rewritten.replace(group, name.replace("/", "_") + equals + "{" + name)
        rewritten = rewritten.replace(group, "{0[" + name + "]")
        values.setdefault(name, 0)
    try:
        return rewritten.format(values)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ValueError(
            f"filename {template!r} cannot be formatted with metrics {values}: {err}"
        ) from err


def check_component(name: str, *, template: str) -> None:
    """Refuse a formatted name that is not a plain file name inside ``dirpath``.

    Separators of either platform are refused (not only ``os.sep``) because a run directory
    may be shared between a Linux cluster and a Windows workstation.
    """
    if name in ("", ".", "..") or any(char in name for char in ("/", "\\", "\0")):
        raise ValueError(
            f"filename {template!r} formats to {name!r}, which would leave dirpath: a checkpoint "
            "name must be a single file name, without '/', '\\' or NUL"
        )


def check_template(
    template: str, *, auto_insert_metric_name: bool, equals: str, extension: str
) -> None:
    """Validate a user template up front so that a typo fails at construction, not hours later.

    The dry run uses the types seen at runtime: ``epoch`` and ``step`` are ints, every other
    metric is a float, so ``"{val_loss:02d}"`` is reported here rather than at the first save.
    """
    if "\0" in template:
        raise ValueError(f"filename must not contain NUL characters, got {template!r}")
    if os.path.isabs(template) or template.startswith(("/", "\\")):
        raise ValueError(f"filename must be relative to dirpath, got absolute {template!r}")
    if ".." in re.split(r"[/\\]", template):
        raise ValueError(f"filename must not contain a '..' component, got {template!r}")
    placeholders: dict[str, object] = {name: 0.0 for name in _template_keys(template)}
    placeholders.update(epoch=0, step=0)
    try:
        name = expand(
            template, placeholders, auto_insert_metric_name=auto_insert_metric_name, equals=equals
        )
    except ValueError as err:
        raise ValueError(
            f"{err} (epoch and step are ints, every other metric is a float: "
            "use e.g. '{val_loss:.2f}', not '{val_loss:d}')"
        ) from err
    check_component(name + extension, template=template)
