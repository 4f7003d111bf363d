"""Checkpoint file names from Lightning-style templates such as ``"{epoch:02d}-{val_loss:.2f}"``.

Users port templates from Lightning and compare the resulting file names, so the expansion
reproduces Lightning's algorithm step for step (key regex, longest key first, ``name=``
insertion, missing metrics as 0). The departures are for safety: a checkpoint name is a single
path component, because retention deletes by name and must never reach outside ``dirpath``; it
is not a dot-name, which the atomic writer keeps for its unfinished files and which are never
listed as checkpoints; and a name too long for the file system (a metric of 1e300 in
``{val_loss:.2f}``) is shortened rather than allowed to end the run at its next save.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping

from resilient.settings import shown

# Lightning's key pattern: from "{" up to the first ":" or "}". It is deliberately naive (a
# "}" inside a format spec is not understood); matching it keeps names identical to Lightning's.
_KEY = re.compile(r"(\{.*?)[:\}]")

# A path component holds 255 bytes. A name's stem gets "-v<N>" and ".ckpt" appended, and the
# atomic writer works under ".{name}.tmp-{12 hex digits}": a stem of at most this many bytes
# leaves room for all of them.
STEM_MAX_BYTES = 180
_HASH_CHARACTERS = 12


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
            f"filename {shown(template)} cannot be formatted with metrics {shown(values)}: {err}"
        ) from err


def fit(stem: str) -> str:
    """``stem``, or if it is longer than ``STEM_MAX_BYTES``, its start plus a hash of all of it.

    The same stem always gives the same name, so the version counter and retention work on
    shortened names as on any other; the hash keeps two long names that share their start apart.
    """
    encoded = os.fsencode(stem)
    if len(encoded) <= STEM_MAX_BYTES:
        return stem
    digest = hashlib.sha256(encoded).hexdigest()[:_HASH_CHARACTERS]
    start = encoded[: STEM_MAX_BYTES - _HASH_CHARACTERS - 1].decode("utf-8", errors="ignore")
    short = f"{start}-{digest}"
    warnings.warn(
        f"checkpoint name {shown(stem)} is {len(encoded)} bytes, longer than a file name may be; "
        f"saved as {short!r}",
        UserWarning,
        stacklevel=3,
    )
    return short


def check_component(name: str, *, template: str) -> None:
    """Refuse a formatted name that is not a plain, visible file name inside ``dirpath``.

    Separators of either platform are refused (not only ``os.sep``) because a run directory
    may be shared between a Linux cluster and a Windows workstation.
    """
    if name in ("", ".", "..") or any(char in name for char in ("/", "\\", "\0")):
        raise ValueError(
            f"filename {shown(template)} formats to {shown(name)}, which would leave dirpath: a "
            "checkpoint name must be a single file name, without '/', '\\' or NUL"
        )
    if name.startswith("."):
        raise ValueError(
            f"filename {shown(template)} formats to {shown(name)}, a hidden name: unfinished "
            "checkpoints are written under dot-names and never listed, so a checkpoint name "
            "must not start with '.'"
        )


def check_template(
    template: str, *, auto_insert_metric_name: bool, equals: str, extension: str
) -> None:
    """Validate a user template up front so that a typo fails at construction, not hours later.

    The dry run uses the types seen at runtime: ``epoch`` and ``step`` are ints, every other
    metric is a float, so ``"{val_loss:02d}"`` is reported here rather than at the first save.
    """
    if "\0" in template:
        raise ValueError(f"filename must not contain NUL characters, got {shown(template)}")
    if os.path.isabs(template) or template.startswith(("/", "\\")):
        raise ValueError(f"filename must be relative to dirpath, got absolute {shown(template)}")
    if ".." in re.split(r"[/\\]", template):
        raise ValueError(f"filename must not contain a '..' component, got {shown(template)}")
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
    if len(os.fsencode(name)) > STEM_MAX_BYTES:
        raise ValueError(
            f"filename {shown(template)} formats to {len(os.fsencode(name))} bytes even with "
            f"zero metrics; at most {STEM_MAX_BYTES} fit in a checkpoint's file name"
        )
    check_component(name + extension, template=template)
