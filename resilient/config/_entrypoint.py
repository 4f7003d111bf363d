"""The job's function: importing `package.module:function` and checking `args` against it.

Everything that can be known before submitting is checked here, because a typo in an argument
name otherwise surfaces only when the job starts, possibly hours later in a cluster queue. That
includes the obvious types: where a parameter is annotated with something simple (int, float,
str, bool, a list or dict of those, an Optional or a union of them, a Literal), a value YAML
read as something else (`epochs: three`, or `lr: 1e-3`, which YAML 1.1 reads as a string) is
refused. Annotations that cannot be checked that simply are left to the function.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from ..loop import Run
from ..submission import Job, JobOptions
from ._errors import Invalid, cut, given, kind, shown, suggestion

_ENTRYPOINT = ("entrypoint",)
_P = inspect.Parameter
_FLOAT_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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
    except BaseException as error:  # noqa: BLE001 - a script's sys.exit() or Ctrl-C on import, too
        raise Invalid(_ENTRYPOINT, f"cannot import {shown(module_name)}: {_why(error)}") from None
    try:
        target = getattr(module, attribute)
    except AttributeError:
        names = [name for name, value in vars(module).items() if callable(value) and not name.startswith("_")]
        hint = suggestion(attribute, names)
        raise Invalid(_ENTRYPOINT, f"module {shown(module_name)} has no {shown(attribute)}; {hint}") from None
    if isinstance(target, Job):
        return target._function, target.options
    what = _not_a_training_function(target)
    if what is not None:
        raise Invalid(_ENTRYPOINT, (
            f"{shown(entrypoint)} is {what}, not a function written in Python "
            "(def train(run, ...)) that takes the Run first"))
    return target, None


def _not_a_training_function(target: object) -> str | None:
    """What `target` is when calling it would not run a training loop (None: it would)."""
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        return "an async function, whose call only makes a coroutine,"
    if inspect.isgeneratorfunction(target):
        return "a generator function, whose call only makes a generator,"
    if inspect.isfunction(target):
        return None
    return "a built-in function" if inspect.isbuiltin(target) else kind(target)


def _why(error: BaseException) -> str:
    """What went wrong on import, in one line; a script that exits on import says how to fix it."""
    if isinstance(error, SystemExit):
        return (f"it called sys.exit({shown(error.code)}) while being imported; keep a script's "
                "own work under `if __name__ == '__main__':`")
    detail = str(error).strip().partition("\n")[0]
    return f"{type(error).__name__}: {cut(detail)}" if detail else type(error).__name__


def check_args(function: Callable[..., Any], args: Mapping[str, Any]) -> None:
    """Refuse `args` that the function, called as `function(run, **args)`, would refuse."""
    try:
        signature = _signature(function)
    except (TypeError, ValueError) as error:
        raise Invalid(_ENTRYPOINT, f"cannot read the function's signature: {error}") from None
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.VAR_POSITIONAL):
        raise Invalid(_ENTRYPOINT, "the function must take the Run as its first parameter, e.g. def main(run, lr=0.1)")
    run, rest = parameters[0], parameters[1:]
    if _excludes_run(run.annotation):
        raise Invalid(_ENTRYPOINT, (
            f"the function's first parameter, {_declared(run)}, cannot take the Run that "
            "resilient passes it"))
    if run.name in args and run.kind is _P.POSITIONAL_OR_KEYWORD:
        raise Invalid(("args", run.name), f"{run.name!r} is the Run, which resilient passes; it is not an argument")
    by_keyword = {p.name: p for p in rest if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)}
    var_keyword = next((p for p in rest if p.kind is _P.VAR_KEYWORD), None)
    for name, value in args.items():
        parameter = by_keyword.get(name, var_keyword)
        if parameter is None:
            hint = suggestion(name, by_keyword) if by_keyword else "it takes none besides the Run"
            raise Invalid(("args", name), f"the function takes no argument {shown(name)}; {hint}")
        _check_type(parameter, name, value)
    for parameter in rest:
        if parameter.default is not _P.empty:
            continue
        if parameter.kind is _P.POSITIONAL_ONLY:
            raise Invalid(_ENTRYPOINT, f"parameter {parameter.name!r} is positional-only, so args cannot set it")
        if parameter.name in by_keyword and parameter.name not in args:
            raise Invalid(("args", parameter.name), "required argument missing: the function has no default for it")


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    """The signature with its annotations evaluated where they can be (`from __future__ import
    annotations` makes them strings); one that names something undefined stays a string."""
    try:
        return inspect.signature(function, eval_str=True)
    except (NameError, SyntaxError, TypeError, AttributeError):
        return inspect.signature(function)


def _declared(parameter: inspect.Parameter) -> str:
    """`epochs: int` or `**options: float`, as the function declares the parameter."""
    stars = "**" if parameter.kind is _P.VAR_KEYWORD else ""
    return f"{stars}{parameter.name}: {inspect.formatannotation(parameter.annotation)}"


def _excludes_run(annotation: Any) -> bool:
    """Whether the first parameter's annotation surely cannot take the Run (`path: str`, say)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return all(_excludes_run(argument) for argument in typing.get_args(annotation))
    return isinstance(annotation, type) and annotation is not _P.empty and not issubclass(Run, annotation)


def _check_type(parameter: inspect.Parameter, name: str, value: Any) -> None:
    if not _refuses(parameter.annotation, value):
        return
    hint = ""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value) and not _refuses(parameter.annotation, 0.0):
        hint = (f"; YAML reads {value} as a string: a number with an exponent needs a dot and a "
                "signed exponent, as in 1.0e-3")
    raise Invalid(("args", name), f"the function takes {_declared(parameter)}, not {given(value)}{hint}")


def _refuses(annotation: Any, value: Any) -> bool:
    """Whether `value` surely does not fit `annotation`; what cannot be checked simply fits."""
    if annotation is _P.empty:
        return False
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return all(_refuses(argument, value) for argument in arguments)
    if origin is typing.Literal:
        return not any(value == choice and type(value) is type(choice) for choice in arguments)
    if annotation is None or annotation is type(None):
        return value is not None
    if annotation is bool:
        return not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, bool) or not isinstance(value, int)
    if annotation is float:  # an int is a fine float, as for Python's own type checkers
        return isinstance(value, bool) or not isinstance(value, (int, float))
    if annotation is str:
        return not isinstance(value, str)
    if annotation is list or origin is list:
        return not isinstance(value, list) or any(_refuses(arguments[0], item) for item in value if arguments)
    if annotation is dict or origin is dict:
        return not isinstance(value, dict) or any(
            _refuses(arguments[0], key) or _refuses(arguments[1], item) for key, item in value.items() if arguments)
    return False
