"""pydantic's validation errors, said the way a job file's author thinks about them.

pydantic's own wording ("Input should be a valid integer") names neither the value nor, for an
unknown key, the keys that would have been right; users fix a file faster when the message says
"must be an integer, not '3' (a string)" or "unknown key; did you mean 'resources'?".
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from ._errors import Invalid, KeyPath, given, shown, suggestion
from ._model import JobFile

_EXPECTED = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def explain(error: ErrorDetails) -> Invalid:
    """The `Invalid` for one pydantic error on a `JobFile`."""
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    path: KeyPath = tuple(part for part in error["loc"] if part != "[key]")
    if kind == "missing":
        return Invalid(path, "required key missing")
    if kind == "extra_forbidden":
        return Invalid(path, f"unknown key; {suggestion(path[-1], _allowed_keys(path[:-1]))}")
    if kind == "value_error":
        return Invalid(path, str(context["error"]))
    if kind in _EXPECTED:
        return Invalid(path, f"{_EXPECTED[kind]}, not {given(value)}")
    if kind in _BOUNDS:
        (bound,) = context.values()
        return Invalid(path, f"must be {_BOUNDS[kind]} {bound}, not {shown(value)}")
    if kind == "literal_error":
        expected = re.sub(r"\b(True|False)\b", lambda match: match[0].lower(), context["expected"])
        return Invalid(path, f"must be {expected}, not {given(value)}")
    return Invalid(path, f"{error['msg']}, not {given(value)}")


def _allowed_keys(path: KeyPath) -> list[str]:
    """The keys of the model that validates the mapping at `path`."""
    model: type[BaseModel] = JobFile
    for part in path:
        if isinstance(part, str):
            model = _model_in(model.model_fields[part].annotation)
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel]:
    """The model inside an annotation such as `list[Checkpoint] | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        try:
            return _model_in(argument)
        except LookupError:
            continue
    raise LookupError(f"no model in {annotation!r}")
