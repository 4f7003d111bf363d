"""resilient.settings: each rule accepts what it should and refuses the rest, naming the setting.

Fast and pure (no files, no processes): the job file, `JobOptions` and `Run` all rely on these
checks, so their messages are pinned here once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from resilient.settings import (
    MAX_NODES,
    RUNS_DIR,
    SAFE_CHARACTERS,
    InvalidSetting,
    InvalidSettingType,
    check_count,
    check_fire_drill_step,
    check_nodes,
    check_safe_text,
    node_range,
    run_dir_for,
    signal_name,
    signal_number,
)

# ---------------------------------------------------------------- counts


@pytest.mark.parametrize(("value", "minimum", "maximum"), [(1, 1, None), (0, 0, 64), (64, 0, 64), (10**9, 1, None)])
def test_a_count_in_range_is_returned(value: int, minimum: int, maximum: int | None) -> None:
    assert check_count("n", value, minimum=minimum, maximum=maximum) == value


@pytest.mark.parametrize(("value", "maximum", "message"), [
    (0, None, "nodes must be >= 1, not 0"),
    (-3, 5, "nodes must be >= 1, not -3"),
    (MAX_NODES + 1, MAX_NODES, f"nodes must be <= {MAX_NODES}, not {MAX_NODES + 1}"),
])
def test_a_count_out_of_range_is_a_value_error_naming_the_setting(value: int, maximum: int | None, message: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        check_count("nodes", value, minimum=1, maximum=maximum)
    assert str(caught.value) == message
    assert caught.value.problem == message.removeprefix("nodes ") and caught.value.name == "nodes"
    assert not isinstance(caught.value, TypeError)


@pytest.mark.parametrize("value", [True, "2", 2.0, None])
def test_a_count_of_another_type_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError) as caught:
        check_count("tasks_per_node", value, minimum=1)
    assert isinstance(caught.value, InvalidSettingType)
    assert str(caught.value) == f"tasks_per_node must be an int >= 1, not {value!r}"


def test_none_is_a_count_only_where_it_means_something() -> None:
    assert check_count("max_requeues", None, minimum=0, none_means="no bound") is None
    with pytest.raises(TypeError, match=r"^max_requeues must be an int >= 0 or None \(no bound\), not '1'$"):
        check_count("max_requeues", "1", minimum=0, none_means="no bound")


def test_a_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(TypeError) as caught:
        check_count("nodes", "9" * 10_000, minimum=1)
    assert len(str(caught.value)) < 200


# ---------------------------------------------------------------- values written into the batch script


@pytest.mark.parametrize("value", ["gpu", "lab-42", "a100,v100", "x=1:y@z%2+3/4.5_6"])
def test_plain_tokens_are_safe(value: str) -> None:
    assert check_safe_text("partition", value) == value


@pytest.mark.parametrize("value", ["low; rm -rf /", "a b", "$(id)", "x\n#SBATCH --uid=0", "'q'", ""])
def test_anything_a_shell_would_interpret_is_refused(value: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        check_safe_text("partition", value)
    problem = f"{value!r} is refused: only {SAFE_CHARACTERS} may appear in a value written into the batch script"
    assert caught.value.problem == problem and str(caught.value) == f"partition {problem}"


@pytest.mark.parametrize("value", [3, None, b"gpu"])
def test_a_token_that_is_not_a_string_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match=rf"^qos must be a string, not {value!r}$"):
        check_safe_text("qos", value)


# ---------------------------------------------------------------- nodes and executor


@pytest.mark.parametrize(("nodes", "executor"), [(1, "local"), (1, "debug"), (1, "slurm"), (8, "slurm")])
def test_one_node_anywhere_several_only_on_slurm(nodes: int, executor: str) -> None:
    check_nodes(nodes, executor)


def test_several_nodes_off_slurm_are_refused_in_one_message() -> None:
    with pytest.raises(InvalidSetting) as caught:
        check_nodes(2, "local")
    message = "2 nodes need executor slurm; the local executor runs on one node"
    assert str(caught.value) == caught.value.problem == message


@pytest.mark.parametrize(("nodes", "expected"), [(1, (1, 1)), (8, (8, 8)), ("1-2", (1, 2)), ("3-3", (3, 3)),
                                                (f"1-{MAX_NODES}", (1, MAX_NODES))])
def test_nodes_are_a_count_or_a_range_min_max(nodes: int | str, expected: tuple[int, int]) -> None:
    assert node_range(nodes) == expected


@pytest.mark.parametrize(("nodes", "problem"), [
    ("2-1", "range '2-1' ends below its start: write 'MIN-MAX' with MIN <= MAX"),
    ("0-2", "range '0-2': must be >= 1, not 0"),
    (f"1-{MAX_NODES + 1}", f"range '1-{MAX_NODES + 1}': must be <= {MAX_NODES}, not {MAX_NODES + 1}"),
    (0, "must be >= 1, not 0"),
])
def test_a_range_out_of_bounds_says_which_end(nodes: int | str, problem: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        node_range(nodes)
    assert caught.value.problem == problem and str(caught.value) == f"nodes {problem}"


@pytest.mark.parametrize("nodes", ["2", "1-", "-2", "1-2-3", "1..2", " 1-2", True, 2.0, None])
def test_nodes_of_another_shape_are_a_type_error(nodes: object) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        node_range(nodes)
    assert caught.value.problem == f"must be an int >= 1 or a range 'MIN-MAX' such as '1-2', not {nodes!r}"


@pytest.mark.parametrize("executor", ["local", "debug"])
def test_a_range_above_one_node_needs_slurm(executor: str) -> None:
    check_nodes("1-1", executor)
    check_nodes("1-2", "slurm")
    with pytest.raises(InvalidSetting) as caught:
        check_nodes("1-2", executor)
    assert caught.value.problem == f"1-2 nodes need executor slurm; the {executor} executor runs on one node"


def test_a_range_runs_one_task_per_node() -> None:
    check_nodes("2-2", "slurm", tasks_per_node=4)  # a fixed count, written as a range
    with pytest.raises(InvalidSetting) as caught:
        check_nodes("1-2", "slurm", tasks_per_node=4)
    assert caught.value.problem == ("a node range (1-2) runs one task per node, not 4: SLURM would allocate only "
                                    "the fewest nodes; use a fixed node count for several tasks per node")


# ---------------------------------------------------------------- fire drill and run directory


def test_a_fire_drill_step_is_a_step_from_one_or_none() -> None:
    assert check_fire_drill_step(None) is None
    assert check_fire_drill_step(1) == 1
    with pytest.raises(ValueError, match=r"^fire_drill_step must be >= 1, not 0$"):
        check_fire_drill_step(0)
    with pytest.raises(TypeError, match=r"^fire_drill_step must be an int >= 1 or None \(no drill\), not '5'$"):
        check_fire_drill_step("5")


def test_the_default_run_dir_is_runs_name_under_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_dir_for(None, "train") == tmp_path / RUNS_DIR / "train" == tmp_path / "runs" / "train"
    assert run_dir_for("out/a", "train") == tmp_path / "out" / "a"
    assert run_dir_for(Path("/srv/x/../y"), "train") == Path("/srv/y")
    assert run_dir_for(tmp_path / "z", "train").is_absolute() and os.getcwd() == str(tmp_path)


# ---------------------------------------------------------------- the warning signal


@pytest.mark.parametrize("value, expected", [("USR2", signal.SIGUSR2), ("sigterm", signal.SIGTERM), (10, 10)])
def test_signal_names_and_numbers(value: str | int, expected: int) -> None:
    assert signal_number(value, name="warning_signal") == expected


@pytest.mark.parametrize("value, error", [("USR9", ValueError), (True, TypeError), (9999, ValueError), (1.5, TypeError)])
def test_bad_signals_name_the_parameter(value: object, error: type) -> None:
    with pytest.raises(error, match="warning_signal"):
        signal_number(value, name="warning_signal")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["KILL", "SIGSTOP", 9, "INT", "CHLD", "SEGV"])
def test_signals_that_cannot_warn_are_refused_with_the_reason(value: str | int) -> None:
    with pytest.raises(ValueError, match=r"warning_signal=SIG\w+ cannot be the warning signal: .*USR1 or USR2"):
        signal_number(value, name="warning_signal")


@pytest.mark.parametrize("value", ["USR1", "SIGUSR1", int(signal.SIGUSR1)])
def test_slurm_spells_the_signal_without_sig(value: str | int) -> None:
    assert signal_name(value, name="warning_signal") == "USR1"


def test_a_huge_refused_value_is_cut_in_the_message_with_its_length() -> None:
    pasted = "x;" * 50_000
    with pytest.raises(InvalidSetting) as refused:
        check_safe_text("partition", pasted)
    assert len(str(refused.value)) < 300 and "(100002 characters)" in str(refused.value), str(refused.value)
