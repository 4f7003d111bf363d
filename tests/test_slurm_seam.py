"""Only `resilient/slurm/` runs SLURM's commands: everything else asks its Scheduler.

That is what lets requeue decisions be tested from recorded output. A module outside it that
names a command binary in a string (not in its docstrings, which may explain what SLURM does)
is running, or about to run, that command behind the seam's back.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "resilient"
SEAM = PACKAGE / "slurm"
COMMANDS = {"sbatch", "srun", "salloc", "scontrol", "squeue", "scancel", "sacct", "sinfo", "sstat", "sreport"}


def _docstrings(tree: ast.Module) -> set[int]:
    owners = [node for node in ast.walk(tree)
              if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return {id(owner.body[0].value) for owner in owners
            if owner.body and isinstance(owner.body[0], ast.Expr) and isinstance(owner.body[0].value, ast.Constant)}


def _named_commands(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = _docstrings(tree)
    return [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r:.60}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and node.value.split()[:1] and node.value.split()[0] in COMMANDS]


def test_no_module_outside_slurm_names_a_slurm_command() -> None:
    outside = [path for path in sorted(PACKAGE.rglob("*.py")) if SEAM not in path.parents]
    assert outside, "the package was not found"
    assert [found for path in outside for found in _named_commands(path)] == []


def test_the_check_finds_the_commands_the_seam_runs() -> None:
    found = " ".join(found for path in sorted(SEAM.rglob("*.py")) for found in _named_commands(path))
    assert all(command in found for command in ("scontrol", "squeue", "scancel", "sbatch"))
