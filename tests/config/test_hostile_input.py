"""Job files written to hurt: each is refused in one line, at once, without a traceback.

The corpus in broken/ holds the small ones (recursive aliases, a modest alias bomb, control
characters, 5,000 levels of brackets); those generated here are too large to keep as files, or
are about overrides, size limits and what the job file accepts where its default is none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient.config import ConfigError, load_job_file
from resilient.config._load import MAX_FILE_BYTES
from resilient.config._yaml import MAX_VALUES

from .conftest import load_text

PLAIN = "entrypoint: tests.config.fixtures.plain:train\n"

pytestmark = pytest.mark.usefixtures("in_tmp_with_fixtures")


def refused(text: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(text, *overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_billion_laughs_are_refused_at_the_line_where_they_pass_the_limit() -> None:
    lines = ["args:", "  a: &a [" + ", ".join(["lol"] * 10) + "]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  {name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    message = refused(PLAIN + "\n".join(lines) + "\n")
    assert message.startswith(f"job.yaml:6: more than {MAX_VALUES} values"), message  # d: 11,111 values


def test_merge_keys_count_as_what_they_merge() -> None:
    lines = ["args:", "  a: &a {x: 1, y: 2}"]
    for previous, name in zip("abcdefghijklmnopqrstuv", "bcdefghijklmnopqrstuvw", strict=True):
        lines.append(f"  {name}: &{name} {{<<: *{previous}, {name}1: *{previous}, {name}2: *{previous}}}")
    assert f"more than {MAX_VALUES} values" in refused(PLAIN + "\n".join(lines) + "\n")


def test_nesting_through_aliases_counts_the_depth_they_stand_for() -> None:
    lines = ["args:", "  a: &a " + "[" * 40 + "1" + "]" * 40]
    for previous, name in zip("abcd", "bcde", strict=True):
        lines.append(f"  {name}: &{name} " + "[" * 40 + f"*{previous}" + "]" * 40)
    assert refused(PLAIN + "\n".join(lines) + "\n").startswith("job.yaml:4: nested more than 64 levels deep")


def test_aliases_within_the_limits_still_work(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(PLAIN + "args: {lr: &rate 0.5, epochs: 3}\n"
                    "checkpoint: [&rule {every_n_train_steps: 10, monitor: loss}, {<<: *rule, monitor: acc}]\n")
    spec = load_job_file(path)
    assert spec.args == {"lr": 0.5, "epochs": 3}
    assert [(rule.every_n_train_steps, rule.monitor) for rule in spec.options.checkpoint] == [(10, "loss"), (10, "acc")]


@pytest.mark.parametrize(("value", "says"), [
    ("&a [*a]", "the alias *a lies inside the value it names"),
    ("[" * 3000 + "]" * 3000, "nested more than 64 levels deep"),
    ("a\x07b", "the character '\\x07' (U+0007) is not allowed"),
    ("1" * 5000, "cannot read '1111"),
])
def test_an_override_value_is_read_as_carefully_as_the_file(value: str, says: str) -> None:
    message = refused(PLAIN, f"args.lr={value}")
    assert message.startswith(("-o args.lr=", "-o 'args.lr=")), message
    assert f": args.lr: the value is not valid YAML: {says}" in message or f": args.lr: {says}" in message, message


def test_a_file_larger_than_the_limit_is_refused_before_it_is_parsed() -> None:
    message = refused(PLAIN + "# padding\n" * (MAX_FILE_BYTES // 10))
    limit = MAX_FILE_BYTES // 1024
    assert message == f"job.yaml: the file is larger than {limit} KiB; a job file this large is refused"


def test_many_values_without_aliases_are_refused_too() -> None:
    assert f"more than {MAX_VALUES} values" in refused(PLAIN + "args: {x: [" + "1," * MAX_VALUES + "]}\n")


@pytest.mark.parametrize(("text", "key"), [
    (PLAIN + "name: " + "x" * 100_000 + "\n", "name"),
    (PLAIN + "run_dir: " + "x" * 100_000 + "\n", "run_dir"),
    (PLAIN + "args: {lr: 0.1}\n" + "checkpoint: {train_time_interval: " + "9" * 100_000 + "q}\n",
     "checkpoint.train_time_interval"),
    ("entrypoint: tests.config.fixtures.typed:train\nargs: {epochs: '" + "x" * 100_000 + "'}\n", "args.epochs"),
])
def test_a_long_value_is_cut_in_the_error(text: str, key: str) -> None:
    message = refused(text)
    assert f": {key}: " in message and len(message) < 700, message[:1000]


def test_a_long_override_is_cut_where_it_is_cited() -> None:
    message = refused(PLAIN, "name=" + "y" * 100_000)
    assert message.startswith("-o name=yyy") and "(100005 characters)" in message and len(message) < 500, message


def test_fire_drill_accepts_null_where_its_default_is_none(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(PLAIN + "fire_drill: {preempt_at_step: 30}\n")
    assert load_job_file(path).fire_drill_step == 30
    assert load_job_file(path, ["fire_drill.preempt_at_step=null"]).fire_drill_step is None
    path.write_text(PLAIN + "fire_drill: {}\n")
    assert load_job_file(path).fire_drill_step is None
