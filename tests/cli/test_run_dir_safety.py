"""`resilient submit` never writes into, or moves, a directory that is not a run's; --fresh says where it moved one.

The jobs run on the debug executor (in the submitting process): what is under test is the run
directory, before and after, not the job.
"""

from __future__ import annotations

from pathlib import Path

from ._cli import ELSEWHERE, assert_usage_error, cli, cli_many

JOB = "entrypoint: tests.config.fixtures.plain:train\nexecutor: debug\nrun_dir: {run_dir}\n"


def test_a_data_directory_is_refused_with_or_without_fresh_and_left_as_it_was(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(run_dir="data"))
    for result in cli_many([("submit", job), ("submit", job, "--fresh")], cwd=tmp_path, env=ELSEWHERE):
        assert_usage_error(result, "run_dir: ")
        assert_usage_error(result, "holds files that are not a run's (train.csv)")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "job.yaml"]
    assert [path.name for path in data.iterdir()] == ["train.csv"]


def test_fresh_moves_the_previous_run_aside_and_says_where(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(run_dir="runs/demo"))
    first = cli("submit", job, cwd=tmp_path, env=ELSEWHERE)
    assert first.returncode == 0, first.stderr
    again = cli("submit", job, "--fresh", cwd=tmp_path, env=ELSEWHERE)
    assert again.returncode == 0, again.stderr
    (aside,) = [path for path in (tmp_path / "runs").iterdir() if path.name != "demo"]
    assert again.stdout.splitlines()[0] == f"moved the previous run to {aside}"
    assert (aside / "job.json").is_file() and (tmp_path / "runs" / "demo" / "job.json").is_file()
