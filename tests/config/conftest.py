"""What the job-file tests share: a scratch directory from which the test fixtures import."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from resilient.config import JobSpec, load_job_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_tmp_with_fixtures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in `tmp_path`, with the repository importable (entrypoints name tests.config.fixtures)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(ROOT), *sys.path])


def load_text(text: str, *overrides: str) -> JobSpec:
    """Write `text` as ./job.yaml and load it as `resilient submit` would."""
    path = Path("job.yaml")
    path.write_text(text)
    return load_job_file(path, overrides)
