"""Tracker identities: made once, the same for every start and every rank, refused when forged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resilient.rundir import TRACKERS_FILE, DamagedFile, Tracker, tracker_id


def test_an_identity_is_made_once_and_kept(tmp_path: Path) -> None:
    first = tracker_id(tmp_path, "wandb")
    assert len(first) == 8 and first.isalnum() and first.islower()
    assert tracker_id(tmp_path, Tracker.WANDB) == first
    assert tracker_id(tmp_path, "tensorboard") != first
    assert json.loads((tmp_path / TRACKERS_FILE).read_text()) == {
        "tensorboard": tracker_id(tmp_path, "tensorboard"), "wandb": first}


def test_a_tracker_that_assigns_ids_is_asked_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def create() -> str:
        calls.append(1)
        return "0123456789abcdef0123456789abcdef"

    assert tracker_id(tmp_path, "mlflow", new=create) == tracker_id(tmp_path, "mlflow", new=create)
    assert calls == [1]


@pytest.mark.parametrize("made", ["", "../other-run", "a b", "x" * 129, None, 7])
def test_an_id_no_tracker_could_use_is_refused_and_nothing_written(tmp_path: Path, made: object) -> None:
    with pytest.raises(ValueError, match="the new mlflow id is .*a tracker id is 1-128 letters"):
        tracker_id(tmp_path, "mlflow", new=lambda: made)  # type: ignore[arg-type, return-value]
    assert not (tmp_path / TRACKERS_FILE).exists()


def test_an_unknown_tracker_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tracker 'neptune' is none of wandb, mlflow, tensorboard"):
        tracker_id(tmp_path, "neptune")


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not JSON"),
    ('["wandb"]', "a JSON list, not an object"),
    ('{"comet": "abc"}', "'comet' is no tracker"),
    ('{"wandb": "../../etc"}', "the id of wandb is '../../etc'"),
    ('{"wandb": 12345678}', "the id of wandb is 12345678"),
])
def test_a_damaged_file_is_named_and_left_as_it_is(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / TRACKERS_FILE).write_text(content)
    with pytest.raises(DamagedFile, match=f"{TRACKERS_FILE} is damaged: .*{problem}.*delete it to start new tracker runs"):
        tracker_id(tmp_path, "wandb")
    assert (tmp_path / TRACKERS_FILE).read_text() == content


def test_ranks_asking_at_once_agree_on_one_identity(tmp_path: Path) -> None:
    """Real processes, started together, each asking for the run's W&B id: the lock makes one of them
    create it and the others read it."""
    ask = f"from resilient.rundir import tracker_id; print(tracker_id(__import__('pathlib').Path({str(tmp_path)!r}), 'wandb'))"
    ranks = [subprocess.Popen([sys.executable, "-c", ask], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    answers = {rank.communicate(timeout=60)[0].strip() for rank in ranks}
    assert answers == {json.loads((tmp_path / TRACKERS_FILE).read_text())["wandb"]}
