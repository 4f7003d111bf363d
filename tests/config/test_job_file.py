"""job.yaml: resolving valid files, the schema, and one test per mistake in broken/."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from resilient.config import ConfigError, JobSpec, json_schema, load_job_file
from resilient.config._load import _FIELDS
from resilient.config._model import Checkpoint
from resilient.requeue import Notify
from resilient.rules import ModelCheckpoint
from resilient.submission import JobOptions
from tests.config.fixtures import decorated, plain

ROOT = Path(__file__).resolve().parents[2]
BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
PLAIN = "entrypoint: tests.config.fixtures.plain:train\n"


@pytest.fixture(autouse=True)
def _keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading puts the current directory first on sys.path; keep that inside each test."""
    monkeypatch.setattr(sys, "path", [str(ROOT), *sys.path])


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path, so that default run directories land there (fixtures stay importable)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(directory: Path, text: str, *overrides: str, **kwargs: Any) -> JobSpec:
    path = directory / "job.yaml"
    path.write_text(text)
    return load_job_file(path, overrides, **kwargs)


def rule_settings(rules: Any) -> list[dict[str, Any]]:
    """Checkpoint rules by their parameters (ModelCheckpoint compares by identity)."""
    rules = [rules] if isinstance(rules, ModelCheckpoint) else list(rules or ())
    return [{name: getattr(rule, name) for name in Checkpoint.model_fields} for rule in rules]


def comparable(options: JobOptions) -> dict[str, Any]:
    return {**vars(options), "checkpoint": rule_settings(options.checkpoint)}


# ---------------------------------------------------------------- valid files


def test_minimal_file_gets_every_default(in_tmp: Path) -> None:
    spec = load(in_tmp, PLAIN)
    assert spec.source == in_tmp / "job.yaml"
    assert (spec.name, spec.entrypoint, spec.args) == ("train", "tests.config.fixtures.plain:train", {})
    assert spec.function is plain.train
    assert spec.options == JobOptions(run_dir=in_tmp / "runs" / "train")
    assert spec.fire_drill_step is None
    assert spec.resolved["resources"] == {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": 0,
                                          "cpus_per_task": None, "mem_gb": None, "time": 60}
    assert spec.resolved["checkpoint"] is None and spec.resolved["run_dir"] == str(in_tmp / "runs" / "train")


def test_every_key_reaches_the_spec(in_tmp: Path) -> None:
    spec = load(in_tmp, """\
name: big-run.v2
entrypoint: tests.config.fixtures.plain:train
args: {lr: 0.01, epochs: 7}
executor: slurm
run_dir: out/big
resources: {nodes: 2, tasks_per_node: 4, gpus_per_node: 4, cpus_per_task: 8, mem_gb: 64, time: 4h}
slurm:
  partition: gpu
  account: lab-42
  qos: high
  signal: SIGUSR1
  signal_delay: 3m
  options: {constraint: a100, exclusive: true, nice: 10}
requeue: {max_requeues: 5, max_crash_requeues: 1}
fire_drill: {preempt_at_step: 20}
""")
    assert (spec.name, spec.args, spec.fire_drill_step) == ("big-run.v2", {"lr": 0.01, "epochs": 7}, 20)
    assert spec.options == JobOptions(
        run_dir=in_tmp / "out" / "big", executor="slurm", nodes=2, tasks_per_node=4, gpus_per_node=4,
        cpus_per_task=8, mem_gb=64, timeout_min=240, partition="gpu", account="lab-42", qos="high",
        warning_signal="SIGUSR1", signal_delay_s=180,
        slurm_options={"constraint": "a100", "exclusive": True, "nice": 10}, max_requeues=5, max_crash_requeues=1)
    assert not (in_tmp / "out").exists(), "loading must not create the run directory"
    assert list(in_tmp.iterdir()) == [in_tmp / "job.yaml"], "the write test must leave nothing behind"


def test_a_node_range_stays_as_written_and_reaches_sbatch(in_tmp: Path) -> None:
    spec = load(in_tmp, PLAIN + "executor: slurm\nresources: {nodes: 1-2}\n")
    assert spec.options.nodes == "1-2" and spec.resolved["resources"]["nodes"] == "1-2"
    assert spec.options.max_tasks == 2
    assert load(in_tmp, PLAIN + "resources: {nodes: 1-1}\n").options.max_tasks == 1  # one node: any executor


@pytest.mark.parametrize(("time", "minutes"), [(90, 90), ("90m", 90), ("1h30m", 90), ("4h", 240), ("1d", 1440)])
def test_time_is_minutes_or_a_duration_and_stays_as_written(in_tmp: Path, time: Any, minutes: int) -> None:
    spec = load(in_tmp, PLAIN + f"resources: {{time: {time}}}\n")
    assert spec.options.timeout_min == minutes
    assert spec.resolved["resources"]["time"] == time


@pytest.mark.parametrize(("delay", "seconds"), [(30, 30), ("2m", 120), ("1m30s", 90)])
def test_signal_delay_is_seconds_or_a_duration(in_tmp: Path, delay: Any, seconds: int) -> None:
    assert load(in_tmp, PLAIN + f"slurm: {{signal_delay: {delay}}}\n").options.signal_delay_s == seconds


def test_one_checkpoint_mapping(in_tmp: Path) -> None:
    spec = load(in_tmp, PLAIN + "checkpoint:\n  every_n_train_steps: 10\n  save_top_k: -1\n  dirpath: ckpts\n")
    (rule,) = spec.options.checkpoint
    assert (rule.every_n_train_steps, rule.save_top_k, rule.every_n_epochs) == (10, -1, 0)
    assert rule.dirpath == str(in_tmp.resolve() / "ckpts")
    assert spec.resolved["checkpoint"][0]["dirpath"] == str(in_tmp / "ckpts")


def test_a_list_of_checkpoints(in_tmp: Path) -> None:
    spec = load(in_tmp, PLAIN + """\
checkpoint:
  - {monitor: val_loss, mode: max, save_top_k: 3, save_last: link}
  - {train_time_interval: 1h30m, save_top_k: -1}
""")
    best, timed = spec.options.checkpoint
    assert (best.monitor, best.mode, best.save_top_k, best.save_last, best.every_n_epochs) == ("val_loss", "max", 3, "link", 1)
    assert timed.train_time_interval.total_seconds() == 5400
    assert spec.resolved["checkpoint"][1]["train_time_interval"] == "1h30m"


def test_a_key_without_a_value_means_its_default(in_tmp: Path) -> None:
    spec = load(in_tmp, PLAIN + "args:\ncheckpoint:\nresources:\nname:\n")
    assert (spec.args, spec.options.checkpoint, spec.options.nodes, spec.name) == ({}, None, 1, "train")


def test_function_with_var_keywords_takes_any_argument(in_tmp: Path) -> None:
    spec = load(in_tmp, "entrypoint: tests.config.fixtures.plain:flexible\nargs: {anything: 1}\n")
    assert spec.args == {"anything": 1}


def test_decorator_fills_what_the_file_leaves_out(in_tmp: Path) -> None:
    spec = load(in_tmp, "entrypoint: tests.config.fixtures.decorated:train\nresources: {gpus_per_node: 2}\n")
    assert spec.function is decorated.train._function
    options = spec.options
    assert (options.gpus_per_node, options.timeout_min, options.max_crash_requeues) == (2, 30, 2)
    assert options.slurm_options == {"constraint": "a100"}
    assert options.checkpoint is decorated.checkpoint, "the function's own rule object must be the one used"
    assert options.run_dir == in_tmp / "runs" / "train"
    rule = spec.resolved["checkpoint"][0]
    assert (rule["every_n_train_steps"], rule["train_time_interval"]) == (5, "90s")
    assert spec.resolved["resources"]["time"] == 30 and spec.resolved["requeue"]["max_crash_requeues"] == 2


def test_file_settings_win_over_the_decorator(in_tmp: Path) -> None:
    spec = load(in_tmp, """\
entrypoint: tests.config.fixtures.decorated:train
resources: {time: 2h}
requeue: {max_crash_requeues: 0}
slurm: {options: {}}
checkpoint: {every_n_epochs: 3}
""")
    assert (spec.options.timeout_min, spec.options.max_crash_requeues, spec.options.slurm_options) == (120, 0, {})
    (rule,) = spec.options.checkpoint
    assert rule is not decorated.checkpoint and rule.every_n_epochs == 3


@pytest.mark.parametrize("source", [
    PLAIN + "args: {lr: 0.5}\nresources: {time: 1h30m}\ncheckpoint: [{every_n_train_steps: 4, dirpath: ck}]\n",
    "entrypoint: tests.config.fixtures.decorated:train\n",
    PLAIN + "notify: {command: notify-send done, webhook: 'https://example.org/h', on: [failed], timeout: 1m}\n",
    "entrypoint: tests.config.fixtures.decorated:notified\n",
])
def test_resolved_round_trips_through_yaml(in_tmp: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load(in_tmp, source)
    saved = yaml.safe_dump(first.resolved)
    (in_tmp / "elsewhere").mkdir()
    monkeypatch.chdir(in_tmp / "elsewhere")  # resolved paths are absolute: they mean the same from anywhere
    again = load(in_tmp / "elsewhere", saved)
    assert comparable(again.options) == comparable(first.options)
    assert (again.args, again.name, again.resolved) == (first.args, first.name, first.resolved)


# ---------------------------------------------------------------- overrides


def test_overrides_nested_indexed_and_new_keys(in_tmp: Path) -> None:
    spec = load(in_tmp, PLAIN + "resources: {gpus_per_node: 1}\n"
                "checkpoint: [{every_n_epochs: 1}, {every_n_train_steps: 5, save_top_k: 1}]\n",
                "resources.gpus_per_node=2", "checkpoint[1].save_top_k=-1", "args.lr=0.1",
                "slurm.options.constraint=a100", "fire_drill.preempt_at_step=5")
    assert spec.options.gpus_per_node == 2
    assert spec.options.checkpoint[1].save_top_k == -1
    assert spec.args == {"lr": 0.1} and isinstance(spec.args["lr"], float)
    assert spec.options.slurm_options == {"constraint": "a100"}
    assert spec.fire_drill_step == 5
    assert spec.resolved["checkpoint"][1]["save_top_k"] == -1


def test_executor_argument_is_the_last_override(in_tmp: Path) -> None:
    spec = load(in_tmp, PLAIN + "executor: local\n", "executor=slurm", executor="debug")
    assert spec.options.executor == "debug" and spec.resolved["executor"] == "debug"


@pytest.mark.parametrize(("override", "expected"), [
    ("resources.nodes=0", "-o resources.nodes=0: resources.nodes: must be >= 1, not 0"),
    ("resources.nodse=2", "-o resources.nodse=2: resources.nodse: unknown key; did you mean 'nodes'?"),
    ("resources", "-o resources: an override is key.path=value"),
    ("=3", "-o =3: the key before '=' is empty"),
    ("checkpoint[3].mode=max", "-o checkpoint[3].mode=max: checkpoint[3]: index out of range"),
    ("args[0]=1", "-o args[0]=1: args[0]: args is a mapping, not a list"),
    ("args.lr=[1,", "-o args.lr=[1,: args.lr: the value is not valid YAML"),
    ('slurm.partition="low\n#SBATCH --uid=0"', "-o 'slurm.partition=\"low\\n#SBATCH --uid=0\"': slurm.partition:"),
])
def test_an_override_error_cites_the_override(in_tmp: Path, override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(in_tmp, PLAIN + "args: {lr: 0.1}\ncheckpoint: [{every_n_epochs: 1}]\n", override)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value) and caught.value.line is None


def test_a_bad_executor_argument_is_cited(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match=r"^executor argument 'cloud': executor: must be 'local', 'slurm'"):
        load(in_tmp, PLAIN, executor="cloud")


def test_an_error_in_the_file_is_still_located_in_the_file_after_overrides(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(in_tmp, PLAIN + "resources:\n  nodes: 0\n", "resources.gpus_per_node=1")
    assert str(caught.value) == f"{in_tmp / 'job.yaml'}:3: resources.nodes: must be >= 1, not 0"
    assert (caught.value.key, caught.value.line) == ("resources.nodes", 3)


# ---------------------------------------------------------------- failures leave nothing behind


def test_a_failed_load_creates_nothing(in_tmp: Path) -> None:
    with pytest.raises(ConfigError):
        load(in_tmp, PLAIN + "run_dir: new/run\nresources: {nodes: 0}\n")
    with pytest.raises(ConfigError):
        load(in_tmp, "entrypoint: tests.config.fixtures.plain:train\nrun_dir: new/run\nargs: {bogus: 1}\n")
    assert list(in_tmp.iterdir()) == [in_tmp / "job.yaml"]


def test_a_missing_file_is_a_config_error(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the job file"):
        load_job_file(in_tmp / "nope.yaml")


# ---------------------------------------------------------------- the schema


def test_json_schema_describes_the_file() -> None:
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["entrypoint"]
    assert schema["additionalProperties"] is False
    for section in ("Resources", "Slurm", "Checkpoint", "Requeue", "FireDrill"):
        assert schema["$defs"][section]["additionalProperties"] is False
        assert all(field.get("description") for field in schema["$defs"][section]["properties"].values())
    for field in schema["properties"].values():  # a section's description sits on its definition
        reference = field.get("$ref", "").removeprefix("#/$defs/")
        assert field.get("description") or schema["$defs"][reference]["description"]
    kinds = schema["properties"]["checkpoint"]["anyOf"]
    assert {"$ref": "#/$defs/Checkpoint"} in kinds and any(kind.get("type") == "array" for kind in kinds)


def test_checkpoint_keys_are_model_checkpoint_parameters_with_its_defaults() -> None:
    parameters = inspect.signature(ModelCheckpoint).parameters
    assert list(Checkpoint.model_fields) == list(parameters)
    for name, field in Checkpoint.model_fields.items():
        assert field.default == parameters[name].default, name


def test_every_job_option_has_a_key_in_the_file() -> None:
    assert set(_FIELDS) == set(JobOptions.__dataclass_fields__)


# ---------------------------------------------------------------- the broken corpus


def _header(path: Path, name: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {name}: "):
            return line.removeprefix(f"# {name}: ")
    return None


def test_the_corpus_is_large_and_every_file_says_what_it_expects() -> None:
    assert len(BROKEN) >= 30
    for path in BROKEN:
        assert path.read_text().startswith("# expect: "), path.name


@pytest.mark.parametrize("path", BROKEN, ids=[path.stem for path in BROKEN])
def test_broken_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`# expect: KEY` (`-`: the file as a whole), `# says: TEXT`, and `# <-` marks the line."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError) as caught:
        load_job_file(path)
    error, message = caught.value, str(caught.value)
    assert "\n" not in message
    expected_key, says = _header(path, "expect"), _header(path, "says")
    if expected_key == "-":
        assert error.key is None, message
    else:
        assert error.key == expected_key and f": {expected_key}" in message, message
    assert says is not None and says in message, message
    marked = [number for number, line in enumerate(path.read_text().splitlines(), 1) if line.endswith("# <-")]
    assert error.line == (marked[0] if marked else None), message
    if marked:
        assert message.startswith(f"{path}:{marked[0]}: "), message


def test_async_save_reaches_the_run_and_each_rule(in_tmp: Path) -> None:
    spec = load(in_tmp, PLAIN + "async_save: false\ncheckpoint:\n  - {every_n_train_steps: 5, async_save: true}\n"
                "  - {every_n_epochs: 1}\n")
    assert spec.options.async_save is False
    assert spec.options.run_arguments(in_tmp)["async_save"] is False
    assert [rule.async_save for rule in spec.options.checkpoint] == [True, None]
    assert load(in_tmp, PLAIN).options.async_save is True
    assert load(in_tmp, PLAIN, "async_save=false").options.async_save is False
    with pytest.raises(ConfigError, match="async_save"):
        load(in_tmp, PLAIN + "async_save: sometimes\n")


def test_notify_reaches_the_run_with_on_as_a_key_not_a_boolean(in_tmp: Path) -> None:
    """YAML 1.1 reads a bare `on` as true; as a key of a job file it is the word."""
    spec = load(in_tmp, PLAIN + """\
notify:
  command: notify-send "training done"
  webhook: https://hooks.slack.com/services/T0/B0/secret
  on: [requeued, gave_up]
  timeout: 30s
""")
    expected = Notify(command=("notify-send", "training done"), webhook="https://hooks.slack.com/services/T0/B0/secret",
                      on=["requeued", "gave_up"], timeout_s=30)
    assert spec.options.notify == expected and spec.options.run_arguments(in_tmp)["notify"] == expected
    assert spec.resolved["notify"] == {"command": 'notify-send "training done"',
                                       "webhook": "https://hooks.slack.com/services/T0/B0/secret",
                                       "on": ["requeued", "gave_up"], "timeout": "30s"}
    defaults = load(in_tmp, PLAIN + "notify: {webhook: 'http://chat.example.org/hook'}\n").options.notify
    assert defaults == Notify(webhook="http://chat.example.org/hook")
    assert defaults.on == {"requeued", "gave_up", "failed", "completed"} and defaults.timeout_s == 10
    assert load(in_tmp, PLAIN).options.notify is None


def test_the_file_notify_wins_over_the_decorator(in_tmp: Path) -> None:
    decorated_only = load(in_tmp, "entrypoint: tests.config.fixtures.decorated:notified\n")
    assert decorated_only.options.notify is decorated.notified.options.notify
    assert decorated_only.resolved["notify"] == {"command": ["notify-send", "run done"], "webhook": None,
                                                 "on": ["failed", "completed"], "timeout": 2.5}
    spec = load(in_tmp, "entrypoint: tests.config.fixtures.decorated:notified\nnotify: {command: [mail, me]}\n")
    assert spec.options.notify == Notify(command=["mail", "me"])
