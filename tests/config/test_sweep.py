"""A job file's sweep: its tasks, their order and names, and one test per refusal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from resilient.config import ConfigError, SweepSpec, json_schema, load_job_file
from resilient.config._sweep import task_name
from resilient.settings import LOCAL_TASKS_PER_CPU, MAX_SWEEP_TASKS

ROOT = Path(__file__).resolve().parents[2]
HEAD = "entrypoint: tests.config.fixtures.plain:train\n"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path (default run directories land there), the fixtures importable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(ROOT), *sys.path])
    return tmp_path


def load(text: str, *overrides: str, head: str = HEAD) -> SweepSpec:
    Path("job.yaml").write_text(head + text)
    spec = load_job_file("job.yaml", overrides)
    assert isinstance(spec, SweepSpec)
    return spec


def refused(text: str, *overrides: str, head: str = HEAD) -> str:
    """The one-line error of loading the file; nothing is created."""
    Path("job.yaml").write_text(head + text)
    before = set(Path().rglob("*"))
    with pytest.raises(ConfigError) as error:
        load_job_file("job.yaml", overrides)
    message = str(error.value)
    assert "\n" not in message and set(Path().rglob("*")) == before, message
    return message


def test_a_grid_is_every_combination_in_the_order_written_the_last_key_fastest(in_tmp: Path) -> None:
    spec = load("sweep: {args.lr: [0.001, 0.0003], args.epochs: [1, 2, 3]}\n")
    assert [task.overrides for task in spec.tasks] == [
        {"args.lr": lr, "args.epochs": epochs} for lr in (0.001, 0.0003) for epochs in (1, 2, 3)]
    assert [task.spec.args for task in spec.tasks][:2] == [{"lr": 0.001, "epochs": 1}, {"lr": 0.001, "epochs": 2}]
    assert spec.run_dir == in_tmp / "runs" / "train" and spec.max_parallel is None
    assert [task.spec.options.run_dir for task in spec.tasks][:2] == [
        spec.run_dir / "epochs=1,lr=0.001", spec.run_dir / "epochs=2,lr=0.001"]
    assert spec.tasks[0].spec.resolved["run_dir"] == str(spec.run_dir / "epochs=1,lr=0.001")
    assert spec.resolved["run_dir"] == str(spec.run_dir) and "sweep" in spec.resolved


def test_the_long_form_runs_the_grid_then_the_listed_tasks(in_tmp: Path) -> None:
    spec = load("sweep:\n  grid: {args.lr: [0.1]}\n  tasks: [{args.lr: 0.5, args.epochs: 7}]\n  max_parallel: 2\n")
    assert [task.name for task in spec.tasks] == ["lr=0.1", "epochs=7,lr=0.5"]
    assert spec.tasks[1].spec.args == {"lr": 0.5, "epochs": 7} and spec.max_parallel == 2


def test_overrides_apply_before_the_sweep(in_tmp: Path) -> None:
    spec = load("sweep: {args.lr: [0.1, 0.2]}\n", "args.epochs=5", "args.lr=9.0", "executor=slurm",
                "sweep.max_parallel=1")
    assert [task.spec.args for task in spec.tasks] == [{"lr": 0.1, "epochs": 5}, {"lr": 0.2, "epochs": 5}]
    assert spec.executor == "slurm" and spec.max_parallel == 1


def test_a_sub_key_sets_a_value_inside_a_mapping_argument(in_tmp: Path) -> None:
    spec = load("sweep: {args.options.lr: [0.1]}\n", head="entrypoint: tests.config.fixtures.plain:flexible\n")
    assert spec.tasks[0].spec.args == {"options": {"lr": 0.1}} and spec.tasks[0].name == "options.lr=0.1"


def test_task_names_are_stable_safe_and_bounded() -> None:
    assert task_name({"args.seed": 0, "args.lr": 0.001}) == task_name({"args.lr": 0.001, "args.seed": 0}) == (
        "lr=0.001,seed=0")
    assert task_name({"args.a": True, "args.b": None, "args.c": 1e-05, "args.d": "cos"}) == "a=true,b=null,c=1e-05,d=cos"
    long = {f"args.name{i}": "x" * 60 for i in range(3)}
    name = task_name(long)
    assert len(name) == 97 and name == task_name(dict(reversed(long.items())))
    assert name != task_name({**long, "args.name2": "y" * 60}) and name[:80] == task_name({**long, "args.name2": "y"})[:80]


@pytest.mark.parametrize("sweep, says", [
    ("{resources.nodes: [1, 2]}", "sweep['resources.nodes']: 'resources.nodes' is refused: a sweep key is args.NAME"),
    ("{lr: [1, 2]}", "sweep.lr: 'lr' is refused: a sweep key is args.NAME"),
    ("{args.lr: []}", "sweep['args.lr']: an empty list makes no task"),
    ("{args.lr: [0.1, 0.2, 0.1]}", "sweep['args.lr'][2]: 0.1 repeats item 0 (0.1)"),
    ("{grid: {args.lr: [0.1]}, tasks: [{args.lr: 0.1}]}", "sweep.tasks[0]: {'args.lr': 0.1} is the same task as task 0"),
    ("{grid: {args.epochs: [1]}, tasks: [{args.epochs: '1'}]}", "is named 'epochs=1' as task 0"),
    ("{tasks: [{}]}", "sweep.tasks[0]: a task sets at least one args key"),
    ("{max_parallel: 2}", "sweep: a sweep needs a grid or tasks"),
    ("{args.lr: [{a: 1}]}", "sweep['args.lr'][0]: must be a number, a plain string, true, false or null"),
    ("{args.lr: [.inf]}", "sweep['args.lr'][0]: inf is refused: a swept number must be finite"),
    ("{args.data_dir: [a/b]}", "'a/b' is refused: a swept string names the task's directory"),
    ("{args.data_dir: ['x; rm -rf ~']}", "'x; rm -rf ~' is refused"),
    ("{args.data_dir: ['$(id)']}", "'$(id)' is refused"),
    ("{args.data_dir: [\"a\\nb\"]}", "'a\\nb' is refused"),
    ("{args.data_dir: [..]}", None),  # a plain token: the directory is 'data_dir=..', inside the sweep
    ("{args.lr: [0.1], max_parallel: 0}", "sweep.max_parallel: must be >= 1, not 0"),
])
def test_a_bad_sweep_is_refused_with_one_line_at_its_key(in_tmp: Path, sweep: str, says: str | None) -> None:
    text = f"sweep: {sweep}\n"
    head = "entrypoint: tests.config.fixtures.plain:needs_data\nargs: {data_dir: d}\n"
    if says is None:
        assert load(text, head=head).tasks[0].spec.options.run_dir.name == "data_dir=.."
        return
    assert says in refused(text, head=head)


def test_an_argument_the_function_does_not_take_names_the_task(in_tmp: Path) -> None:
    message = refused("sweep:\n  args.lr: [0.1]\n  args.lrr: [1]\n")
    assert message == ("job.yaml:4: sweep task lr=0.1,lrr=1: args.lrr: the function takes no argument 'lrr'; "
                       "did you mean 'lr'?")


def test_each_tasks_values_are_checked_against_the_signature(in_tmp: Path) -> None:
    head = "entrypoint: tests.config.fixtures.typed:train\n"
    message = refused("sweep:\n  tasks:\n    - {args.epochs: 3}\n    - {args.epochs: three}\n", head=head)
    assert message.startswith("job.yaml:5: sweep task epochs=three: args.epochs: the function takes epochs: int"), message


def test_more_than_the_maximum_of_tasks_is_refused_before_expanding(in_tmp: Path) -> None:
    values = ", ".join(map(str, range(100)))
    message = refused(f"sweep: {{args.lr: [{values}], args.epochs: [{values}]}}\n")
    assert message == (f"job.yaml:2: sweep: 10000 tasks are more than the {MAX_SWEEP_TASKS} a sweep may have "
                       "(SLURM's default MaxArraySize is 1001); split it into several sweeps")


def test_a_checkpoint_directory_every_task_would_share_is_refused(in_tmp: Path) -> None:
    assert refused("sweep: {args.lr: [0.1]}\ncheckpoint: {dirpath: ckpts}\n").startswith(
        "job.yaml:3: checkpoint.dirpath: every task of the sweep would write its checkpoints into this one directory")


def test_the_debug_executor_is_refused(in_tmp: Path) -> None:
    assert refused("sweep: {args.lr: [0.1]}\n", "executor=debug").endswith(
        "sweep: the debug executor runs one job inside this process; a sweep runs on the local or slurm executor")


def test_the_local_executor_refuses_to_hold_tasks_back(in_tmp: Path) -> None:
    assert "sweep.max_parallel: the local executor starts all 2 tasks at once" in refused(
        "sweep: {args.lr: [0.1, 0.2], max_parallel: 1}\n")
    assert load("sweep: {args.lr: [0.1, 0.2], max_parallel: 1}\n", "executor=slurm").max_parallel == 1


def test_the_local_executor_refuses_more_processes_than_the_machine_runs(in_tmp: Path) -> None:
    most = LOCAL_TASKS_PER_CPU * len(os.sched_getaffinity(0))
    values = ", ".join(map(str, range(most + 1)))
    assert f"{most + 1} tasks of 1 rank(s) are {most + 1} processes at once" in refused(f"sweep: {{args.epochs: [{values}]}}\n")
    assert len(load(f"sweep: {{args.epochs: [{values}]}}\n", "executor=slurm").tasks) == most + 1


def test_the_sweep_directory_must_be_a_sweeps_own(in_tmp: Path) -> None:
    (in_tmp / "runs" / "train").mkdir(parents=True)
    (in_tmp / "runs" / "train" / "data.csv").write_text("x")
    assert "holds files that are not a sweep's (data.csv)" in refused("sweep: {args.lr: [0.1]}\n")
    (in_tmp / "runs" / "train" / "data.csv").unlink()
    (in_tmp / "runs" / "train" / "status.json").write_text("{}")
    assert "holds a run, not a sweep" in refused("sweep: {args.lr: [0.1]}\n")
    message = refused("sweep: {args.lr: [0.1]}\nrun_dir: /tmp\n")
    assert message.startswith("job.yaml:3: run_dir: '/tmp' is refused: it is a system, shared or home directory")


def test_the_schema_describes_both_forms(in_tmp: Path) -> None:
    schema = json.dumps(json_schema())
    assert '"Sweep"' in schema and "max_parallel" in schema and "^args(?:" in schema
