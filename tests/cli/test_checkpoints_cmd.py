"""`resilient checkpoints DIR [--verify]` on a directory holding odd entries beside sound checkpoints.

Every ``*.ckpt`` entry, and every Hugging Face ``checkpoint-N`` directory, is listed, whatever it
is: one that is no sound checkpoint is one line saying why, and the exit code is 1. A forged
manifest pointing at /dev/zero must not make the command hang.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import xxhash

from resilient.checkpoint import (
    MANIFEST_NAME,
    CheckpointOrigin,
    FileEntry,
    read_manifest,
    seal_checkpoint,
    write_checkpoint,
)
from resilient.checkpoint._manifest import encode_manifest

from ._cli import cli, cli_many


def _save(path: Path, step: int) -> None:
    write_checkpoint([(path, "manual")], {"state.pt": torch.ones(3)}, step=step, epoch=0, metrics={}, world_size=1)


def _odd_entries(directory: Path) -> dict[str, str]:
    """Make a sound checkpoint and one of each odd entry in `directory`; what each line must say."""
    _save(directory / "good.ckpt", step=5)
    (directory / "notes.txt").write_text("not a checkpoint")
    (directory / "plain.ckpt").write_bytes(b"a single-file checkpoint from another tool")
    (directory / "dangling.ckpt").symlink_to("nowhere.ckpt")
    (directory / "to-file.ckpt").symlink_to("notes.txt")
    (directory / "loop.ckpt").symlink_to("loop.ckpt")
    os.mkfifo(directory / "fifo.ckpt")
    _save(directory / "forged.ckpt", step=9)
    forged = dataclasses.replace(read_manifest(directory / "forged.ckpt"),
                                 files={"/dev/zero": FileEntry(0, xxhash.xxh3_128_hexdigest(b""))})
    (directory / "forged.ckpt" / MANIFEST_NAME).write_bytes(encode_manifest(forged))
    return {
        "plain.ckpt": "NO: is not a directory but a regular file",
        "dangling.ckpt": "NO: is a dangling symbolic link to nowhere.ckpt",
        "to-file.ckpt": "NO: is a symbolic link to notes.txt, which is not a directory",
        "loop.ckpt": "NO: is a symbolic link loop",
        "fifo.ckpt": "NO: is not a directory but a FIFO",
        "forged.ckpt": "NO: MANIFEST.json lists '/dev/zero', which is an absolute path",
    }


def test_every_odd_entry_is_one_line_saying_why_and_the_exit_code_is_1(tmp_path):
    expected = _odd_entries(tmp_path)
    for result in cli_many([("checkpoints", tmp_path), ("checkpoints", tmp_path, "--verify")]):
        assert result.returncode == 1, (result.args, result.stdout, result.stderr)
        assert result.stderr == "", result.stderr
        lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
        assert sorted(lines) == sorted([*expected, "good.ckpt"]), result.stdout
        for name, says in expected.items():
            assert says in lines[name], lines[name]
        assert lines["good.ckpt"].split()[1] == "5" and " yes" in lines["good.ckpt"], lines["good.ckpt"]


def test_only_sound_checkpoints_exit_0(tmp_path):
    _save(tmp_path / "a.ckpt", step=1)
    (tmp_path / "last.ckpt").symlink_to("a.ckpt")
    result = cli("checkpoints", tmp_path, "--verify")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["a.ckpt", "last.ckpt"], result.stdout


def test_a_rule_is_shown_in_words_and_an_odd_one_as_stored(tmp_path):
    """The manifest's rule is a mapping read as it is; one written by another tool (an interval
    that is no number, or beyond any date) is shown as stored, never a traceback."""
    rules = {
        "steps.ckpt": ({"kind": "ModelCheckpoint", "every_n_train_steps": 100, "train_time_interval_s": 5400.0},
                       "every 100 steps, every 1:30:00"),
        "text.ckpt": ({"kind": "ModelCheckpoint", "train_time_interval_s": "soon"}, "every 'soon' s"),
        "huge.ckpt": ({"kind": "ModelCheckpoint", "train_time_interval_s": 1e300}, "every 1e+300 s"),
    }
    for name, (rule, _) in rules.items():
        write_checkpoint([(tmp_path / name, rule)], {"state.pt": torch.ones(1)}, step=1, epoch=0, metrics={},
                         world_size=1)
    result = cli("checkpoints", tmp_path)
    assert result.returncode == 0 and result.stderr == "", (result.stdout, result.stderr)
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    for name, (_, label) in rules.items():
        assert label in lines[name], lines[name]


def _trainer_save(directory: Path) -> None:
    """What Hugging Face's Trainer writes into ``checkpoint-N`` (a few of its files; any bytes do)."""
    directory.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.pt", "trainer_state.json", "rng_state_0.pth"):
        (directory / name).write_bytes(name.encode() * 10)


def test_trainer_checkpoints_are_listed_and_one_a_kill_left_unsealed_is_not_valid(tmp_path):
    """`Resilient` seals the Trainer's ``checkpoint-N`` with a manifest: listed like ours. One without
    (a kill during the save) is a line saying so and exit 1, never left out; the files inside a
    checkpoint, and a damaged one that resume moved aside, are not listed on their own."""
    hf = tmp_path / "hf"
    for step in (5, 10):
        _trainer_save(hf / f"checkpoint-{step}")
        seal_checkpoint(hf / f"checkpoint-{step}", step=step, epoch=0, world_size=1,
                        rule=CheckpointOrigin.HUGGINGFACE.value)
    _trainer_save(hf / "checkpoint-15")
    _trainer_save(hf / "checkpoint-3.unverified-20261203-101500-4242")
    _save(tmp_path / "step=2.ckpt", step=2)
    for result in cli_many([("checkpoints", tmp_path), ("checkpoints", tmp_path, "--verify")]):
        assert result.returncode == 1, (result.args, result.stdout, result.stderr)
        assert result.stderr == "", result.stderr
        lines = [line.split(maxsplit=1) for line in result.stdout.splitlines()[1:]]
        assert [name for name, _ in lines] == ["hf/checkpoint-10", "hf/checkpoint-5", "step=2.ckpt",
                                               "hf/checkpoint-15"], result.stdout
        assert lines[0][1].split()[:3] == ["10", "0", "huggingface"], lines[0]
        assert lines[3][1].startswith("- ") and lines[3][1].endswith(
            f"NO: has no {MANIFEST_NAME}: it was never completely written"), lines[3]
    # Sealed once its save completes, the Trainer's output directory is all sound.
    seal_checkpoint(hf / "checkpoint-15", step=15, epoch=0, world_size=1, rule=CheckpointOrigin.HUGGINGFACE.value)
    result = cli("checkpoints", hf, "--verify")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [
        "checkpoint-15", "checkpoint-10", "checkpoint-5"], result.stdout
