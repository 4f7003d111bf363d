"""`args` against the function's annotations, and resources bounded by what can really run."""

from __future__ import annotations

import pytest

from resilient.config import ConfigError, _load

from .conftest import load_text as load

TYPED = "entrypoint: tests.config.fixtures.typed:train\n"

pytestmark = pytest.mark.usefixtures("in_tmp_with_fixtures")


@pytest.mark.parametrize("args", [
    "{epochs: 5, lr: 1, name: run, verbose: true}",                    # an int is a fine float
    "{lr: 1.0e-3, seed: null, layers: [64, 32], extra: {dropout: 0.1}}",
    "{seed: 7, layers: null, optimizer: sgd}",
    "{anything: [1, {a: b}], data: whatever, more_steps: 3}",           # unannotated, unresolvable, **more: int
])
def test_values_that_fit_the_annotations_pass(args: str) -> None:
    assert load(TYPED + f"args: {args}\n").args


@pytest.mark.parametrize(("args", "key", "says"), [
    ("{epochs: three}", "args.epochs", "the function takes epochs: int, not 'three' (a string)"),
    ("{epochs: 2.5}", "args.epochs", "not 2.5 (a number)"),
    ("{epochs: true}", "args.epochs", "not True (a boolean)"),
    ("{lr: '0.1'}", "args.lr", "the function takes lr: float, not '0.1' (a string)"),
    ("{lr: 1e-3}", "args.lr", "YAML reads 1e-3 as a string: a number with an exponent needs a dot"),
    ("{name: 3}", "args.name", "takes name: str"),
    ("{verbose: 1}", "args.verbose", "takes verbose: bool"),
    ("{seed: abc}", "args.seed", "takes seed: Optional[int]"),
    ("{layers: [64, wide]}", "args.layers", "takes layers: list[int] | None"),
    ("{layers: 64}", "args.layers", "not 64 (an integer)"),
    ("{extra: {dropout: high}}", "args.extra", "takes extra: dict[str, float] | None"),
    ("{optimizer: adamw}", "args.optimizer", "takes optimizer: Literal['adam', 'sgd'], not 'adamw'"),
    ("{more_steps: many}", "args.more_steps", "takes **more: int, not 'many'"),
])
def test_values_that_surely_do_not_fit_are_refused(args: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(TYPED + f"args: {args}\n")
    assert caught.value.key == key and says in caught.value.message, str(caught.value)


def test_an_override_is_checked_against_the_annotation_too() -> None:
    with pytest.raises(ConfigError, match=r"^-o args.epochs=three: args.epochs: the function takes epochs: int"):
        load(TYPED, "args.epochs=three")


@pytest.mark.parametrize(("entrypoint", "says"), [
    ("builtins:print", "'builtins:print' is a built-in function, not a function written in Python"),
    ("collections:OrderedDict", "'collections:OrderedDict' is type, not a function"),
    ("tests.config.fixtures.typed:asynchronous", "is an async function, whose call only makes a coroutine,"),
])
def test_what_calling_would_not_train_is_refused(entrypoint: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(f"entrypoint: {entrypoint}\n")
    assert caught.value.key == "entrypoint" and says in caught.value.message, str(caught.value)


def test_the_local_executor_runs_at_most_four_tasks_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_load, "_local_cpus", lambda: 2)
    assert load(TYPED + "resources: {tasks_per_node: 8}\n").options.tasks_per_node == 8
    with pytest.raises(ConfigError) as caught:
        load(TYPED + "resources:\n  tasks_per_node: 9\n")
    assert str(caught.value).endswith(
        "job.yaml:3: resources.tasks_per_node: 9 tasks are more than the local executor runs on this machine's "
        "2 CPU(s): at most 8, 4 per CPU")
    assert load(TYPED + "executor: slurm\nresources: {tasks_per_node: 9}\n").options.tasks_per_node == 9
