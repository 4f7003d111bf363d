"""`resilient` driving real jobs on the local executor: preempted, cancelled, killed, failed, resumed.

Jobs that must be steered at a known step wait at a gate (`gate_steps` of train_model): the
test waits for `ready-N`, acts (`resilient preempt`, `cancel`, a second `submit`), and the job
goes on by itself once a stop signal reaches it. References run beside the job they are
compared with: the suite has two cores and each job spends seconds starting python and torch.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import resilient
from tests.loop._jobs import assert_bitwise_equal
from tests.rundir._modes import OTHERS, mode, writable

from ._cli import (
    QUICKSTART,
    Follower,
    assert_usage_error,
    cli,
    cli_many,
    events,
    kill_jobs,
    story,
    train_model_file,
)

Start = Callable[..., Follower]


def _kinds(history: list[dict]) -> list[str]:
    return [event["event"] for event in history]


def _status(run_dir: Path) -> str:
    result = cli("status", run_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(autouse=True)
def _no_job_left(tmp_path: Path) -> Iterator[None]:
    """A test that fails half-way must not leave its job training on the suite's two cores."""
    yield
    kill_jobs(tmp_path)


@pytest.fixture
def follow() -> Iterator[Start]:
    """Start `submit ... --follow` in the background (stopped at the end, after its job)."""
    followers: list[Follower] = []

    def start(*args: object) -> Follower:
        followers.append(Follower(*args))
        return followers[-1]

    yield start
    for follower in followers:
        follower.stop()


@dataclass(frozen=True)
class Gated:
    """A train_model job file that waits at step 10 until a stop signal (or the test) says go."""

    job_file: Path
    gate: Path
    run_dir: Path

    def submit(self, follow: Start) -> Follower:
        job = follow(self.job_file, "-o", f"run_dir={self.run_dir}")
        job.wait_for(self.gate / "ready-10")
        return job


@pytest.fixture
def gated(tmp_path: Path) -> Gated:
    gate = tmp_path / "gate"
    gate.mkdir()
    job_file = train_model_file(tmp_path, out=str(tmp_path / "out.pt"), gate_steps=[10], gate_dir=str(gate))
    return Gated(job_file, gate, tmp_path / "run")


# ---------------------------------------------------------------- the quickstart, as the README tells it


@dataclass(frozen=True)
class Quickstart:
    result: subprocess.CompletedProcess[str]  # of `submit --follow`
    run_dir: Path
    reference_dir: Path  # the same file without the fire drill


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quickstart]:
    root = tmp_path_factory.mktemp("quickstart")
    drilled = Follower(QUICKSTART, "-o", f"run_dir={root / 'run'}")
    reference = Follower(QUICKSTART, "-o", f"run_dir={root / 'reference'}", "-o", "fire_drill=null",
                         "-o", "args.step_seconds=0")  # it only sleeps: the same weights, sooner
    try:
        assert reference.finish().returncode == 0
        yield Quickstart(drilled.finish(), root / "run", root / "reference")
    finally:
        kill_jobs(root)
        drilled.stop()
        reference.stop()


def test_the_quickstart_follows_its_fire_drill_to_completion(quickstart: Quickstart) -> None:
    result = quickstart.result
    assert result.returncode == 0, result.stderr
    shown = ["fire drill: preemption signal sent at step 30", "stop agreed at step 30: SIGUSR2",
             "checkpoint at step 30: emergency/step=30.ckpt", "requeued (preempted #1)", "started job",
             "resumed at step 30 from emergency/step=30.ckpt", "finished at step 70"]
    remaining = iter(result.stderr.splitlines())
    assert all(any(phrase in line for line in remaining) for phrase in shown), result.stderr  # each after the last
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("resilient: job ") and lines[-1].endswith(" completed"), lines[-1]
    # Only the run's events and the job's own output: neither submitit's INFO lines nor the job
    # repeating (before it, as the logs are read first) the requeue its event announces.
    assert "submitit" not in result.stdout + result.stderr
    assert not [line for line in lines if line.startswith("resilient: requeued")], result.stderr
    status = _status(quickstart.run_dir)
    assert "completed" in status and "1 (preempted 1)" in status, status


def test_the_quickstart_events_tell_the_drill_in_order(quickstart: Quickstart) -> None:
    history = story(quickstart.run_dir)
    assert _kinds(history) == ["submitted", "started", "fire_drill", "signal", "checkpoint", "requeued", "started",
                               "resumed", "finished"]
    emergency, requeued, resumed = history[4], history[5], history[7]
    assert (emergency["rule"]["kind"], emergency["step"]) == ("emergency", 30)
    assert requeued["cause"] == "preempted"
    assert resumed["step"] == 30 and resumed["checkpoint"] == emergency["path"]
    assert len({event["job_id"] for event in history}) == 1  # requeued as the same job


def test_the_quickstart_ends_with_the_weights_of_a_run_without_drill(quickstart: Quickstart) -> None:
    drilled = resilient.load_checkpoint(quickstart.run_dir / "checkpoints" / "last.ckpt")
    undrilled = resilient.load_checkpoint(quickstart.reference_dir / "checkpoints" / "last.ckpt")
    assert drilled["resilient"]["step"] == undrilled["resilient"]["step"] == 70
    assert drilled["model"].keys() == undrilled["model"].keys()
    for name, tensor in drilled["model"].items():
        assert torch.equal(tensor, undrilled["model"][name]), name


def test_logs_prints_rank_0_output_and_follows_a_finished_job_to_its_end(quickstart: Quickstart) -> None:
    printed, followed = cli_many([("logs", quickstart.run_dir), ("logs", quickstart.run_dir, "-f")])
    for result in (printed, followed):
        assert result.returncode == 0, result.stderr
        assert "resumed from" in result.stdout and "epoch 4: step 70" in result.stdout, result.stdout
    assert followed.stdout == printed.stdout


# ---------------------------------------------------------------- steering a running job


def test_a_job_preempted_twice_comes_back_each_time_and_ends_bitwise_equal(tmp_path: Path, follow: Start) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    run_dir = tmp_path / "run"
    reference = follow(train_model_file(tmp_path, "reference", out=str(tmp_path / "reference.pt")),
                       "-o", f"run_dir={tmp_path / 'reference'}")
    job = follow(train_model_file(tmp_path, out=str(tmp_path / "out.pt"), gate_steps=[10, 20], gate_dir=str(gate)),
                 "-o", f"run_dir={run_dir}")
    for step in (10, 20):
        job.wait_for(gate / f"ready-{step}")
        preempted = cli("preempt", run_dir)
        assert preempted.returncode == 0, preempted.stderr
    result = job.finish()
    assert result.returncode == 0, result.stderr
    assert reference.finish().returncode == 0

    status, listed = cli_many([("status", run_dir), ("checkpoints", run_dir, "--verify")])
    assert "completed" in status.stdout and "2 (preempted 2)" in status.stdout, status.stdout + status.stderr
    history = story(run_dir)
    assert _kinds(history) == ["submitted", "started",
                               "fire_drill", "signal", "checkpoint", "requeued", "started", "resumed",
                               "fire_drill", "signal", "checkpoint", "requeued", "started", "resumed", "finished"]
    for first in (2, 8):
        _, _, emergency, requeued, _, resumed = history[first:first + 6]
        assert emergency["rule"]["kind"] == "emergency" and requeued["cause"] == "preempted"
        assert resumed["step"] == emergency["step"] and resumed["checkpoint"] == emergency["path"]
    last_emergency = Path(history[10]["path"])
    assert last_emergency.is_dir()
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert str(last_emergency.relative_to(run_dir)) in listed.stdout, listed.stdout
    rows = listed.stdout.splitlines()[1:]
    assert rows and all(row.endswith("yes (checksums)") for row in rows), listed.stdout
    assert_bitwise_equal(tmp_path / "reference.pt", tmp_path / "out.pt")


def test_a_live_job_keeps_its_run_directory_until_cancelled_then_a_new_submission_resumes_it(
        tmp_path: Path, gated: Gated, follow: Start) -> None:
    job = gated.submit(follow)
    record = (gated.run_dir / "job.json").read_text()
    job_id = json.loads(record)["job_id"]
    for refused in cli_many([("submit", gated.job_file, "-o", f"run_dir={gated.run_dir}"),
                             ("submit", gated.job_file, "--fresh", "-o", f"run_dir={gated.run_dir}")]):
        assert_usage_error(refused, says=f"already has a live local job {job_id}")
    assert (gated.run_dir / "job.json").read_text() == record
    assert not list(tmp_path.glob("run.*"))  # --fresh moved nothing aside

    cancelled = cli("cancel", gated.run_dir)
    assert cancelled.returncode == 0, cancelled.stderr
    result = job.finish()
    assert result.returncode == 0, result.stderr  # the user asked for it: following it there went well
    assert "cancelled" in _status(gated.run_dir)
    history = story(gated.run_dir)
    assert _kinds(history) == ["submitted", "started", "cancel_requested", "signal", "checkpoint", "cancelled"]
    emergency = history[4]
    assert emergency["rule"]["kind"] == "emergency" and Path(emergency["path"]).is_dir()
    last = result.stderr.splitlines()[-1]
    assert last == f"resilient: job {job_id} cancelled: emergency checkpoint {emergency['path']}", result.stderr

    again = cli("submit", gated.job_file, "--follow", "-o", f"run_dir={gated.run_dir}")  # no --fresh: resume
    assert again.returncode == 0, again.stderr
    resumed = story(gated.run_dir)[len(history):]
    assert _kinds(resumed) == ["submitted", "started", "resumed", "finished"]
    assert resumed[0]["previous_job"] == job_id
    assert resumed[2]["step"] == emergency["step"] and resumed[2]["checkpoint"] == emergency["path"]


def test_a_killed_job_leaves_a_stale_lock_that_does_not_block_the_next_submission(gated: Gated, follow: Start) -> None:
    job = gated.submit(follow)
    kill_jobs(gated.run_dir)  # as the OOM killer or a failed node would: no checkpoint, no last word
    assert "lost" in job.finish().stderr
    record, holder = (json.loads((gated.run_dir / name).read_text()) for name in ("job.json", ".lock"))
    assert holder["job_id"] == record["job_id"]  # the lock file still names the dead job
    assert "lost" in _status(gated.run_dir)
    before = story(gated.run_dir)
    assert _kinds(before) == ["submitted", "started"]
    assert [event for event in events(gated.run_dir) if event["event"] == "checkpoint"]
    # What to resume from is the newest checkpoint committed before the kill: a background write may
    # have committed one whose `checkpoint` event the kill cut off (the event follows the commit).
    newest = max((gated.run_dir / "checkpoints").glob("step=*.ckpt"), key=lambda path: int(path.name[5:-5]))

    (gated.gate / "go-10").touch()  # the new job passes step 10 again
    again = cli("submit", gated.job_file, "--follow", "-o", f"run_dir={gated.run_dir}")
    assert again.returncode == 0, again.stderr
    after = story(gated.run_dir)[len(before):]
    assert _kinds(after) == ["submitted", "lost", "started", "resumed", "finished"]
    assert after[1]["step"] == 10  # the killed start's heartbeat, which the next start recorded for it
    assert after[3]["checkpoint"] == str(newest) and after[4]["step"] == 48


def test_fresh_moves_a_completed_run_aside_and_starts_over(tmp_path: Path) -> None:
    job_file = train_model_file(tmp_path, out=str(tmp_path / "out.pt"), epochs=1)
    run_dir = tmp_path / "run"
    first = cli("submit", job_file, "--follow", "-o", f"run_dir={run_dir}")
    assert first.returncode == 0, first.stderr
    fresh = cli("submit", job_file, "--fresh", "--follow", "-o", f"run_dir={run_dir}")
    assert fresh.returncode == 0, fresh.stderr

    (aside,) = tmp_path.glob("run.*")
    assert (aside / "checkpoints" / "step=16.ckpt").is_dir()
    assert _kinds(story(aside)) == ["submitted", "started", "finished"]
    history = story(run_dir)
    assert _kinds(history) == ["submitted", "started", "finished"]  # no resumed: it started over
    assert history[0]["set_aside"] == str(aside)


def test_a_job_that_raises_fails_and_says_why(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job_file = train_model_file(tmp_path, out=str(tmp_path / "out.pt"), fail_at_step=6)
    result = cli("submit", job_file, "--follow", "-o", f"run_dir={run_dir}")
    assert result.returncode == 1, result.stderr
    assert "failed" in _status(run_dir)
    history = story(run_dir)
    assert _kinds(history) == ["submitted", "started", "failed"]
    assert "RuntimeError: boom at step 6" in history[-1]["message"]


def test_verify_finds_a_flipped_byte_that_sizes_alone_miss(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job_file = train_model_file(tmp_path, out=str(tmp_path / "out.pt"), epochs=1)
    made = cli("submit", job_file, "--executor", "debug", "-o", f"run_dir={run_dir}")  # runs in the command
    assert made.returncode == 0, made.stderr
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    payload = max((path for path in checkpoint.iterdir() if path.suffix == ".pt"), key=lambda path: path.stat().st_size)
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))

    name = str(checkpoint.relative_to(run_dir))
    quick, verified = cli_many([("checkpoints", run_dir), ("checkpoints", run_dir, "--verify")])
    assert quick.returncode == 0, quick.stdout + quick.stderr
    (row,) = [line for line in quick.stdout.splitlines() if line.startswith(name)]
    assert row.endswith("yes"), quick.stdout
    assert verified.returncode == 1, verified.stdout + verified.stderr
    (row,) = [line for line in verified.stdout.splitlines() if line.startswith(name)]
    assert "NO" in row, verified.stdout


def test_a_job_submitted_under_umask_000_leaves_nothing_others_can_change(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "train"
    job_file = train_model_file(tmp_path, out=str(tmp_path / "out.pt"), epochs=1)
    result = cli("submit", job_file, "--follow", "-o", f"run_dir={run_dir}", umask=0)
    assert result.returncode == 0, result.stderr
    assert writable(tmp_path / "runs", by=OTHERS) == []
    for name in ("config.yaml", "job.json", "status.json", "events.jsonl", ".lock"):
        assert mode(run_dir / name) == 0o644, name
    assert mode(run_dir / "submitit") == 0o700  # the pickle in it is the code the job runs
    (pickle,) = (run_dir / "submitit").glob("*_submitted.pkl")
    assert mode(pickle) == 0o600
