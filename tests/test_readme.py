"""The README is the newcomer's reference: its job-file table and quickstart must not drift."""

from __future__ import annotations

import re
from pathlib import Path

from resilient.config import json_schema

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


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


def test_the_quickstart_runs_the_quickstart_job_file() -> None:
    quickstart = README.split("## Quickstart", 1)[1]
    commands = re.findall(r"^(\S.*?)\s+#", quickstart.split("```bash", 1)[1].split("```", 1)[0], re.MULTILINE)
    assert commands[0] == "resilient submit examples/quickstart.yaml --follow"
    assert commands[1] == "python -m pytest"
    assert (Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml").is_file()
