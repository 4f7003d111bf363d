"""The job's function: importing `package.module:function` and checking `args` against it.

Everything that can be known before submitting is checked here, because a typo in an argument
name otherwise surfaces only when the job starts, possibly hours later in a cluster queue.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..submission._job import Job
from ..submission._options import JobOptions
from ._errors import Invalid, kind, suggestion

_ENTRYPOINT = ("entrypoint",)
_P = inspect.Parameter


def import_entrypoint(entrypoint: str) -> tuple[Callable[..., Any], JobOptions | None]:
    """The plain function and, for a `@resilient.job`, the decorator's options.

    The current directory goes first on sys.path, as `python -m` puts it, so that
    `entrypoint: train:main` finds ./train.py. It stays there: the module's own later imports
    (and unpickling the function by reference) need the same path.
    """
    module_name, _, attribute = entrypoint.partition(":")
    cwd = os.getcwd()
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - whatever the module raises while importing
        detail = str(error).strip().partition("\n")[0]
        raise Invalid(_ENTRYPOINT, f"cannot import {module_name!r}: {type(error).__name__}: {detail}") from None
    try:
        target = getattr(module, attribute)
    except AttributeError:
        names = [name for name, value in vars(module).items() if callable(value) and not name.startswith("_")]
        hint = suggestion(attribute, names)
        raise Invalid(_ENTRYPOINT, f"module {module_name!r} has no {attribute!r}; {hint}") from None
    if isinstance(target, Job):
        return target._function, target.options
    if not callable(target):
        raise Invalid(_ENTRYPOINT, f"{entrypoint!r} is {kind(target)}, not a function")
    return target, None


def check_args(function: Callable[..., Any], args: Mapping[str, Any]) -> None:
    """Refuse `args` that the function, called as `function(run, **args)`, would refuse."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as error:
        raise Invalid(_ENTRYPOINT, f"cannot read the function's signature: {error}") from None
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.VAR_POSITIONAL):
        raise Invalid(_ENTRYPOINT, "the function must take the Run as its first parameter, e.g. def main(run, lr=0.1)")
    run, rest = parameters[0], parameters[1:]
    if run.name in args and run.kind is _P.POSITIONAL_OR_KEYWORD:
        raise Invalid(("args", run.name), f"{run.name!r} is the Run, which resilient passes; it is not an argument")
    by_keyword = [p.name for p in rest if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)]
    if not any(p.kind is _P.VAR_KEYWORD for p in rest):
        for name in args:
            if name not in by_keyword:
                hint = suggestion(name, by_keyword) if by_keyword else "it takes none besides the Run"
                raise Invalid(("args", name), f"the function takes no argument {name!r}; {hint}")
    for parameter in rest:
        if parameter.default is not _P.empty:
            continue
        if parameter.kind is _P.POSITIONAL_ONLY:
            raise Invalid(_ENTRYPOINT, f"parameter {parameter.name!r} is positional-only, so args cannot set it")
        if parameter.name in by_keyword and parameter.name not in args:
            raise Invalid(("args", parameter.name), "required argument missing: the function has no default for it")
