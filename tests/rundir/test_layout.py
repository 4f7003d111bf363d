"""The run directory's names are spelled in one module: `resilient/rundir/_layout.py`.

A name spelled twice can drift apart, and a run written by one version would then look empty
to the next. This reads the package's source with `ast` (nothing is imported), so it is fast.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from resilient.rundir import _layout as layout

PACKAGE = Path(__file__).resolve().parents[2] / "resilient"
LAYOUT = PACKAGE / "rundir" / "_layout.py"
# Names that mean nothing but a file of the run directory: spelled anywhere, even inside a message.
FILE_NAMES = (layout.CONFIG_FILE, layout.RECORD_FILE, layout.STATUS_FILE, layout.EVENTS_FILE, layout.SWEEP_FILE)
# Names that are also ordinary words (a command is called `checkpoints`): spelled as a path or a constant.
DIRECTORY_NAMES = {layout.CHECKPOINTS_DIR, layout.EMERGENCY_DIR, layout.SUBMITIT_DIR, layout.LOCK_FILE,
                   layout.STATUS_LOCK_FILE, layout.HEARTBEAT_FILE}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants, which may name files to explain them."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _enum_values(tree: ast.AST) -> set[int]:
    """The ids of enum members' values: a vocabulary word (a checkpoint made at a stop is of
    origin "emergency") is not a path, even where it equals one."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(getattr(base, "id", getattr(base, "attr", "")) in ("Enum", "Vocabulary")
                                                  for base in node.bases):
            found.update(id(item.value) for item in node.body
                         if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant))
    return found


def _as_path(node: ast.Constant, parent: ast.AST) -> bool:
    """Whether the literal is used as a path (joined with `/`, compared with a path's `.name`) or
    made a constant of its own."""
    if isinstance(parent, ast.Assign):
        return any(isinstance(target, ast.Name) and target.id.isupper() for target in parent.targets)
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
        return True
    if isinstance(parent, ast.Call) and node in parent.args:
        return isinstance(parent.func, (ast.Name, ast.Attribute)) and getattr(
            parent.func, "id", getattr(parent.func, "attr", "")) in {"Path", "join", "with_name", "joinpath"}
    if isinstance(parent, ast.Compare):
        return any(isinstance(side, ast.Attribute) and side.attr == "name" for side in (parent.left, *parent.comparators))
    return False


def _spellings(source: str) -> list[str]:
    """`line: 'name'` for each run directory name the module's source spells."""
    tree = ast.parse(source)
    allowed = _docstrings(tree) | _enum_values(tree)
    found = []
    for parent in ast.walk(tree):
        for node in ast.iter_child_nodes(parent):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in allowed:
                continue
            named = [name for name in FILE_NAMES if name in node.value]
            if node.value in DIRECTORY_NAMES and _as_path(node, parent):
                named.append(node.value)
            found += [f"{node.lineno}: {name!r}" for name in named]
    return sorted(found)


@pytest.mark.parametrize("path", [path for path in sorted(PACKAGE.rglob("*.py")) if path != LAYOUT],
                         ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_but_the_layout_spells_a_run_directory_name(path: Path) -> None:
    assert _spellings(path.read_text()) == [], "import the name, or a path helper, from resilient.rundir"


def test_the_check_finds_what_it_looks_for() -> None:
    source = ('"""status.json, in a docstring, is fine."""\n'
              'A = run_dir / "checkpoints" / "emergency"\n'
              'B = f"no job.json in {run_dir}"\n'
              'C = path.parent.name == "emergency"\n'
              'D = parser.add_parser("checkpoints")\n'
              'E = os.path.join(run_dir, ".lock")\n'
              'SUBMITIT = "submitit"\n'
              'class Origin(Vocabulary):\n    EMERGENCY = "emergency"\n')
    assert _spellings(source) == ["2: 'checkpoints'", "2: 'emergency'", "3: 'job.json'", "4: 'emergency'",
                                  "6: '.lock'", "7: 'submitit'"]
