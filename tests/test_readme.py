"""The README is the newcomer's reference: its job-file table and quickstart must not drift."""

from __future__ import annotations

import re
from pathlib import Path

from resilient.config import json_schema

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _key_paths() -> list[str]:
    schema = json_schema()
    definitions = schema.get("$defs", {})
    paths = []
    for name, spec in schema["properties"].items():
        reference = spec.get("$ref") or next((s.get("$ref") for s in spec.get("anyOf", []) if "$ref" in s), None)
        section = definitions.get(reference.rsplit("/", 1)[-1], {}) if reference else {}
        if name != "checkpoint" and section.get("properties"):
            paths += [f"{name}.{key}" for key in section["properties"]]
        else:
            paths.append(name)
    return paths


def test_the_job_file_table_lists_every_key() -> None:
    missing = [path for path in _key_paths() if f"`{path}`" not in README]
    assert not missing, f"README's job file table lacks {missing}"


def _quickstart_commands() -> list[str]:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", quickstart, re.DOTALL)]


def test_the_quickstart_installs_then_runs_the_example_and_the_suite() -> None:
    """Pasted into a fresh clone, each command sets itself up: torch first, then the package."""
    example, suite = _quickstart_commands()[:2]
    setup = "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
    assert example == setup + "pip install -e . && resilient submit examples/quickstart.yaml --follow"
    assert suite == setup + "pip install -e '.[test]' && python -m pytest"
    assert (REPO / "examples" / "quickstart.yaml").is_file()


def test_ci_runs_the_readmes_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    pattern = re.search(r'grep -m1 -E "(.*?)" README.md', ci)
    assert pattern is not None
    assert [line for line in README.splitlines() if re.search(pattern[1], line)] == [_quickstart_commands()[1]]
