"""The package's shape, checked: layers import only downwards, and only each other's public names.

CONTRIBUTING.md describes the layers; this test is what keeps the description true. It reads the
source with `ast` (nothing is imported), so it costs milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resilient"

# Lowest first: a subpackage may import only the ones listed before it.
LAYERS = ["rundir", "checkpoint", "rules", "coordination", "slurm", "requeue", "loop", "submission", "config", "cli", "integrations"]
# Top-level modules anyone may import.
SHARED = {"_lazy", "_version", "settings"}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every `from ..pkg[.mod] import names` of a module: (dotted target within resilient, names, line)."""
    module_parts = path.relative_to(PACKAGE).with_suffix("").parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and (node.module == "resilient" or node.module.startswith("resilient.")):
                    target = node.module.split(".")[1:]
                else:
                    continue
            else:
                base = list(module_parts[:-1])  # the module's package (for __init__ too)
                base = base[: len(base) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            found.append((".".join(target), [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("resilient."):
                    found.append((alias.name.split(".", 1)[1], [], node.lineno))
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers_through_public_names(path: Path):
    own = _package_of(path)
    problems = []
    for target, names, line in _imports(path):
        if not target:
            continue  # `from .. import x`: the top-level package, only __main__ and cli do that
        other = target.split(".")[0]
        if other == own or other in SHARED:
            continue
        where = f"{path.relative_to(PACKAGE)}:{line}"
        if own in LAYERS and other in LAYERS and LAYERS.index(other) > LAYERS.index(own):
            problems.append(f"{where}: {own} may not import {other}, a higher layer")
        private = [part for part in target.split(".")[1:] if part.startswith("_")]
        private += [name for name in names if name.startswith("_")]
        if private:
            problems.append(f"{where}: reaches into {other}'s private {', '.join(private)}")
    assert not problems, "\n".join(problems)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _eager_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules this one imports when it is itself imported (module level only:
    an import inside a function runs later and cannot take part in a cycle at import time)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        # An ancestor package is already being imported when this module is: not an edge.
        found.update(candidate for candidate in candidates
                     if candidate in modules and candidate != name and not name.startswith(candidate + "."))
    return found


def test_no_import_cycle():
    paths = {_module_name(path): path for path in _modules()}
    graph = {name: _eager_imports(path, set(paths)) for name, path in paths.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, "import cycle: " + " -> ".join(visiting[visiting.index(name):] + [name])
        visiting.append(name)
        for other in sorted(graph[name]):
            visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
