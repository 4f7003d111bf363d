"""Lazily exported packages (`resilient/_lazy.py`) say the same thing three times, and mean it.

Each such `__init__.py` names its exports in `lazy_exports(...)` (what runs), again under
`if TYPE_CHECKING:` (what type checkers and editors read) and in `__all__`; a name missing from
one of them would be invisible to a type checker, or fail only when first read.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resilient"


def _lazy_packages() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("__init__.py") if "lazy_exports(" in path.read_text())


def _module_name(path: Path) -> str:
    return ".".join(path.parent.relative_to(PACKAGE.parent).parts)


def _declared(path: Path) -> tuple[dict[str, set[str]], dict[str, set[str]], set[str], set[str]]:
    """(lazy_exports' mapping, the TYPE_CHECKING imports, __all__, names imported eagerly)."""
    lazy: dict[str, set[str]] = {}
    typed: dict[str, set[str]] = {}
    listed: set[str] = set()
    eager: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for child in node.body:
                assert isinstance(child, ast.ImportFrom), ast.unparse(child)
                typed.setdefault("." * child.level + (child.module or ""), set()).update(a.name for a in child.names)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                ast.unparse(node.value.func) == "lazy_exports":
            lazy = {module: set(names) for module, names in ast.literal_eval(node.value.args[1]).items()}
        elif isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
            listed = set(ast.literal_eval(node.value))
        elif isinstance(node, ast.ImportFrom) and node.module not in ("typing", "_lazy"):
            eager.update(alias.name for alias in node.names if alias.name != "lazy_exports")
    return lazy, typed, listed, eager


def test_the_public_packages_are_lazy() -> None:
    assert {_module_name(path) for path in _lazy_packages()} >= {"resilient", "resilient.config", "resilient.submission"}


@pytest.mark.parametrize("path", _lazy_packages(), ids=_module_name)
def test_lazy_exports_type_checking_imports_and_all_agree(path: Path) -> None:
    lazy, typed, listed, eager = _declared(path)
    assert lazy == typed
    assert listed == eager | {name for names in lazy.values() for name in names}


@pytest.mark.parametrize("path", _lazy_packages(), ids=_module_name)
def test_every_export_resolves_to_its_module_s_object(path: Path) -> None:
    name = _module_name(path)
    package = importlib.import_module(name)
    lazy = _declared(path)[0]
    for module, names in lazy.items():
        for export in names:
            assert getattr(package, export) is getattr(importlib.import_module(module, name), export)
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        getattr(package, "nothing_here")
