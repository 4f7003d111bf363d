"""Sharded state (FSDP2 on gloo, two real processes): every rank writes its own shards through
torch.distributed.checkpoint, rank 0 commits them with the manifest, and a resume is bitwise.

The job is tests/loop/scripts/train.py with `--fsdp`: a transformer block with dropout,
`fully_shard`ed, AdamW, a per-step LR schedule, a shuffled sampler; its final weights are
gathered whole on rank 0 and compared with an uninterrupted run's.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import resilient
from resilient.checkpoint import SHARDS_METADATA, read_manifest
from resilient.requeue import EXIT_STOPPED

from ._jobs import FSDP, SCRIPT, assert_bitwise_equal, launch, rank_envs, run_to_end


@pytest.fixture()
def reference(reference_weights: Callable[..., Path]) -> Path:
    """The final weights of an uninterrupted 2-rank run (its run directory beside them)."""
    return reference_weights(2, FSDP)


def test_every_rank_writes_its_shards_into_one_committed_checkpoint(reference: Path) -> None:
    checkpoint = reference.parent / "run" / "checkpoints" / "step=12.ckpt"
    manifest = read_manifest(checkpoint)
    assert manifest.format_version == 3 and manifest.world_size == 2
    shards = {name for name in manifest.files if name.endswith(".distcp")}
    assert {name.split("_")[2] for name in shards} == {"0", "1"}  # DCP's __{rank}_{n}.distcp, from both ranks
    assert SHARDS_METADATA in manifest.files
    assert sorted(path.name for path in checkpoint.iterdir()) == sorted([*manifest.files, "MANIFEST.json"])
    resilient.checkpoint.verify(checkpoint, full=True)
    state = resilient.load_checkpoint(checkpoint, only=["schedule"])  # the replicated part loads alone
    assert state.keys() == {"schedule", "resilient"} and state["resilient"]["step"] == 12
    assert state["resilient"]["sharded"] == ["model", "optimizer"]  # read whole: see test_export.py


def test_a_warning_signal_to_one_rank_stops_both_and_resumes_bitwise(tmp_path: Path, reference: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    procs = launch(run_dir, out, 2, None, (*FSDP, "--signal-at-step", "5", "--signal", "USR2", "--signal-rank", "1"))
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == EXIT_STOPPED, stderr
    [emergency] = (run_dir / "checkpoints" / "emergency").iterdir()  # the step both ranks agreed on
    assert read_manifest(emergency).world_size == 2 and read_manifest(emergency).step in (6, 7)
    report = json.loads(run_to_end(run_dir, out, 2, extra=FSDP))
    assert report == {"step": 12, "resumed_from": str(emergency.resolve())}
    assert_bitwise_equal(reference, out)


def test_killed_at_random_steps_resumes_bitwise(tmp_path: Path, reference: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    for kill_at in sorted(random.Random(10).sample(range(1, 12), 2)):
        run_to_end(run_dir, out, 2, kill_at=kill_at, extra=FSDP)
        assert not out.exists()
    report = json.loads(run_to_end(run_dir, out, 2, extra=FSDP))
    assert report["step"] == 12 and report["resumed_from"] is not None
    assert_bitwise_equal(reference, out)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _restart(run_dir: Path, out: Path, code: int) -> list[tuple[str, str]]:
    """Both ranks started again, each exiting with `code`: their stdout and stderr."""
    procs = launch(run_dir, out, 2, None, FSDP)
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == code, stderr
    return outputs


@pytest.mark.parametrize("damaged", ["__1_*.distcp", "rank-00001.pt", SHARDS_METADATA])
def test_a_damaged_file_falls_back_to_the_older_checkpoint_on_every_rank(
        tmp_path: Path, reference: Path, damaged: str) -> None:
    """Wherever the damage is, the ranks agree to skip the checkpoint: a shard is found damaged while
    DCP reads it (after tensors were loaded), rank 1's own file before its sharded load starts (its
    refusal reaches rank 0 in DCP's exchange of load plans), DCP's metadata by every rank as it
    reads it."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    run_to_end(run_dir, out, 2, kill_at=9, extra=(*FSDP, "--sync"))  # step 8's save is committed at the kill
    newest = run_dir / "checkpoints" / "step=8.ckpt"
    file = next(newest.glob(damaged))
    _flip_a_byte(file)
    outputs = _restart(run_dir, out, 0)
    assert f"skipping checkpoint {newest}" in outputs[0][1] and f"payload file {file.name} is corrupt" in outputs[0][1]
    assert json.loads(outputs[0][0])["resumed_from"] != str(newest.resolve())
    assert_bitwise_equal(reference, out)


def test_damage_found_once_shards_were_loaded_and_no_older_valid_checkpoint_stops_every_rank(tmp_path: Path) -> None:
    """Each rank verifies its shard files as DCP reads them into the model, so damage is found after
    tensors were loaded. With every checkpoint damaged, no older one loads over them: the model is
    neither fresh nor restored, and both ranks stop naming the checkpoint to move aside, instead of
    training on half-loaded state. Nothing is deleted."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    run_to_end(run_dir, out, 2, kill_at=9, extra=(*FSDP, "--sync"))
    checkpoints = sorted(path for path in (run_dir / "checkpoints").rglob("*.ckpt") if not path.is_symlink())
    assert len(checkpoints) >= 2
    shards = {shard.stat().st_ino: shard for checkpoint in checkpoints for shard in checkpoint.glob("__1_*.distcp")}
    for shard in shards.values():  # each file once: checkpoints of several rules share files (hard links)
        _flip_a_byte(shard)
    outputs = _restart(run_dir, out, 1)
    for _, stderr in outputs:
        assert "were loaded in part from checkpoint" in stderr and "no older valid checkpoint was found" in stderr
    for checkpoint in checkpoints:
        assert f"skipping checkpoint {checkpoint}" in outputs[0][1]
    assert all(checkpoint.is_dir() for checkpoint in checkpoints) and not out.exists()


def test_a_checkpoint_of_another_model_is_refused_on_every_rank_not_replaced_by_an_older_one(
        tmp_path: Path, reference: Path) -> None:
    """A sound sharded checkpoint that DCP cannot load into the tracked model (a wider block): both ranks
    stop at `track` naming the checkpoint and the mismatch; no older checkpoint is tried, nothing is
    deleted, and the right model then resumes from the newest one and finishes bitwise."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    run_to_end(run_dir, out, 2, kill_at=9, extra=(*FSDP, "--sync"))  # step 8 committed at the kill
    listing = lambda: sorted((p.name, p.stat().st_mtime_ns) for p in (run_dir / "checkpoints").rglob("*"))
    before = listing()
    procs = launch(run_dir, out, 2, None, (*FSDP, "--width", "32"))
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 1, stderr
        assert "does not fit the tracked model, optimizer (was it saved from another model?)" in stderr
        assert "failed on ranks 0, 1: ValueError: Size mismatch" in stderr
        assert "skipping checkpoint" not in stderr
    assert listing() == before
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    newest = str(run_dir / "checkpoints" / "step=8.ckpt")
    assert not [event for event in events if event["event"] == "resumed"]  # sharded state loads before it counts
    assert events[-1]["event"] == "failed" and "does not fit the tracked model" in events[-1]["message"]
    assert f"checkpoint {newest} passed verification" in events[-1]["message"]
    report = json.loads(run_to_end(run_dir, out, 2, extra=FSDP))
    assert report["resumed_from"] == str((run_dir / "checkpoints" / "step=8.ckpt").resolve())
    assert_bitwise_equal(reference, out)


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))


@pytest.mark.parametrize("mode", [(), ("--sync",)], ids=["async", "sync"])
def test_a_rank_that_cannot_write_its_shard_leaves_no_checkpoint_and_stops_every_rank(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """Rank 1's shard outgrows its file size limit (``ulimit -f``): a real EFBIG, on one rank only,
    in its background writer's thread (async) or in its training thread (sync)."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    command = [sys.executable, str(SCRIPT), "--run-dir", str(run_dir), "--out", str(out), *FSDP, *mode]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=_limit_file_size if rank == 1 else None)
             for rank, env in enumerate(rank_envs(2))]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    assert all(proc.returncode == 1 for proc in procs), [stderr[-2000:] for _, stderr in outputs]
    for _, stderr in outputs:  # the script does not catch the failed save: it ends with it, on both ranks
        assert "CheckpointError: writing the shards of" in stderr
        assert "failed on rank 1: OSError: [Errno 27] File too large" in stderr
    assert not list(run_dir.glob("checkpoints/**/*.ckpt"))  # nothing that looks complete
    assert not [path for path in (run_dir / "checkpoints").iterdir() if path.name.startswith(".")]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"


_REFUSALS = """
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
import resilient
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
fully_shard(model)
optimizer = torch.optim.AdamW(model.parameters())
weights = resilient.ModelCheckpoint(every_n_train_steps=1, save_weights_only=True)
for rules, objects in (([weights], dict(model=model)), ([], dict(optimizer=optimizer))):
    with resilient.Run(checkpoint=rules, run_dir="{run_dir}") as run:
        try:
            run.track(**objects)
        except ValueError as error:
            print(error)
dist.destroy_process_group()
"""


def test_what_sharded_state_cannot_do_is_refused_at_track_naming_why(tmp_path: Path) -> None:
    from ._jobs import free_port

    script = _REFUSALS.format(port=free_port(), run_dir=tmp_path / "run")
    result = subprocess.run([sys.executable, "-c", script], env=rank_envs(1)[0], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    weights, optimizer = result.stdout.splitlines()
    assert weights == ("track(): a save_weights_only rule cannot save sharded (FSDP) state (model): it writes on "
                       "rank 0 alone, which holds only its shards; use full checkpoints")
    assert optimizer.startswith("track(): optimizer 'optimizer' holds sharded (FSDP) parameters of no tracked module")


def _stopped(run_dir: Path, world_size: int, signal_at: int, *extra: str) -> None:
    procs = launch(run_dir, run_dir.parent / "unused.pt", world_size, None,
                   (*FSDP, "--signal-at-step", str(signal_at), *extra))
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == EXIT_STOPPED, stderr


def _restored_on(run_dir: Path, world_size: int, copy: Path) -> dict[str, object]:
    """The whole model and optimizer state a resume of `run_dir`'s checkpoint restores on `world_size` ranks."""
    shutil.copytree(run_dir, copy)
    dump = copy / "restored.pt"
    run_to_end(copy, copy / "out.pt", world_size, extra=(*FSDP, "--dump-restored", str(dump)))
    return torch.load(dump)


def _assert_same_state(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_same_state(a[key], b[key])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_state(x, y)
    else:
        assert a == b


def test_two_ranks_then_one_then_two_restore_exactly_and_see_every_sample_once(tmp_path: Path) -> None:
    """A requeue onto fewer, then more, ranks: DCP reshards the model and AdamW, the sampler deals
    the rest of each epoch out among the ranks there are, new ranks seed their own RNG."""
    run_dir, record = tmp_path / "run", str(tmp_path / "samples")
    _stopped(run_dir, 2, 3, "--record-samples", record)  # in epoch 0 (6 steps of 8 samples per rank)
    on_two = _restored_on(run_dir, 2, tmp_path / "copy-2")  # a same-size resume restores what was saved
    _stopped(run_dir, 1, 10, "--record-samples", record, "--dump-restored", str(tmp_path / "on-one.pt"))
    _assert_same_state(torch.load(tmp_path / "on-one.pt"), on_two)
    on_one = _restored_on(run_dir, 1, tmp_path / "copy-1")  # in epoch 1 now, saved by one rank
    report = json.loads(run_to_end(run_dir, tmp_path / "out.pt", 2, extra=(
        *FSDP, "--record-samples", record, "--dump-restored", str(tmp_path / "on-two-again.pt"))))
    _assert_same_state(torch.load(tmp_path / "on-two-again.pt"), on_one)
    assert report["step"] > 12  # a world size of one takes more steps per epoch
    seen: dict[int, list[int]] = {0: [], 1: []}
    for path in tmp_path.glob("samples-rank*.txt"):
        for line in path.read_text().splitlines():
            epoch, *indices = map(int, line.split())
            seen[epoch] += indices
    assert sorted(seen[0]) == list(range(96)) and sorted(seen[1]) == list(range(96))
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [(e["saved_world_size"], e["world_size"]) for e in events if e["event"] == "resumed"] == [(2, 1), (1, 2)]


def test_a_kill_while_a_background_sharded_save_waits_to_commit_resumes_from_the_one_before(
    tmp_path: Path, reference: Path
) -> None:
    """Rank 0's writer is held just before the atomic rename of step 8's checkpoint, every rank's
    shards and the manifest written, while training goes on; SIGKILL then. Nothing of step 8
    looks committed, the resume takes step 6's checkpoint and ends bitwise equal."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    procs = launch(run_dir, out, 2, None, (*FSDP, "--kill-in-commit-of-step", "8"))
    procs[0].wait(timeout=240)
    assert procs[0].returncode == -signal.SIGKILL, procs[0].communicate()[1]
    procs[1].kill()
    for proc in procs:
        proc.communicate()
    checkpoints = run_dir / "checkpoints"
    [held] = checkpoints.glob(".step=8.ckpt.tmp-*")
    assert {"MANIFEST.json", SHARDS_METADATA} <= {path.name for path in held.iterdir()}
    assert {path.name.split("_")[2] for path in held.glob("*.distcp")} == {"0", "1"}  # both ranks' shards
    committed = {path.name: read_manifest(path).step for path in checkpoints.glob("*.ckpt")}
    assert max(committed.values()) == 6
    report = json.loads(run_to_end(run_dir, out, 2, extra=FSDP))
    assert committed[Path(report["resumed_from"]).name] == 6  # (a name that later saves may reuse)
    assert not list(checkpoints.glob(".*"))  # the held temporary is gone
    assert_bitwise_equal(reference, out)
