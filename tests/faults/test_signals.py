"""Signal storms and Ctrl-C against a real 1-process job.

A storm: hundreds of SIGUSR2 and SIGTERM in a burst must still give exactly one emergency
checkpoint and exit code 75, and the run must resume from it to weights bitwise equal to a
run never interrupted (the kill-and-resume job of tests/loop, with its dropout, momentum and
shuffled data). Ctrl-C: a first SIGINT stops at the next step boundary with a checkpoint, the
process exits non-zero without a traceback and the run's state is `stopped`; a second SIGINT
while a long save is being written aborts it, leaving nothing that looks like a checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.loop._jobs import assert_bitwise_equal, launch, run_to_end

from ._faults import TALLY, Child, audit, events, job_command, poll, verify_in_process

STORM = 400


def _checkpoint_events(run_dir: Path, under: str = "") -> list[dict]:
    return [e for e in events(run_dir) if e["event"] == "checkpoint" and Path(e["path"]).parent.name.startswith(under)]


def test_a_signal_storm_gives_one_emergency_checkpoint_exit_75_and_a_bitwise_resume(tmp_path: Path) -> None:
    reference = tmp_path / "reference.pt"
    (uninterrupted,) = launch(tmp_path / "reference-run", reference, 1, None)  # meanwhile, on the other core
    run_dir, out = tmp_path / "stormed-run", tmp_path / "stormed.pt"
    (job,) = launch(run_dir, out, 1, None, extra=("--step-seconds", "0.05"))
    try:
        poll(lambda: _checkpoint_events(run_dir), "a first checkpoint (the run is under way)", job)
        for index in range(STORM):
            os.kill(job.pid, signal.SIGUSR2 if index % 2 else signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert uninterrupted.wait(timeout=240) == 0, uninterrupted.communicate()[1]
    TALLY.add(fault="signal storms")
    assert job.returncode == 75, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert not out.exists() and not stdout
    emergency = [p.name for p in (run_dir / "checkpoints" / "emergency").iterdir() if not p.name.startswith(".")]
    assert len(emergency) == 1, emergency
    assert len(_checkpoint_events(run_dir, under="emergency")) == 1, events(run_dir)
    assert len([e for e in events(run_dir) if e["event"] == "signal"]) == 1, events(run_dir)

    report = json.loads(run_to_end(run_dir, out, 1))
    assert report["resumed_from"].endswith(f"emergency/{emergency[0]}"), report
    assert_bitwise_equal(reference, out)


def _stopped_state(run_dir: Path) -> str:
    return json.loads((run_dir / "status.json").read_text())["state"]


def test_a_first_sigint_stops_at_the_next_step_boundary_with_a_checkpoint(tmp_path: Path) -> None:
    job = {"kib": 64, "steps": 40, "rules": "keep", "every": 1000}
    run_dir = tmp_path / "run"
    child = Child(job_command(run_dir, step_seconds=0.05, **job))
    assert child.wait_for("step", step=3) is not None, child.stderr
    child.process.send_signal(signal.SIGINT)
    code = child.finish()
    TALLY.add(fault="SIGINTs")
    assert code > 0, f"exit code {code}: it should exit non-zero, not die by the signal\n{child.stderr[-3000:]}"
    assert "Traceback" not in child.stderr, child.stderr[-3000:]
    assert child.event("done") is None
    assert _stopped_state(run_dir) == "stopped"
    boundary = max(e["step"] for e in child.events if e["event"] == "step") + 1
    found = audit([run_dir / "checkpoints", run_dir / "checkpoints" / "emergency"], job["kib"])
    assert not found.bad and not found.invalid, (found.bad, found.invalid)
    assert sorted(found.valid.values()) == [boundary], found.valid

    restart = Child(job_command(run_dir, report_only=True, **job))
    assert restart.finish() == 0, restart.stderr[-3000:]
    assert restart.event("resumed") == {"event": "resumed", "run_dir": str(run_dir), "checkpoint": next(iter(found.valid)),
                                        "step": boundary, "problem": None}


def test_a_second_sigint_during_a_long_save_aborts_it_and_leaves_no_checkpoint(tmp_path: Path) -> None:
    job = {"kib": 128 * 1024, "steps": 40, "rules": "keep", "every": 1000}
    run_dir = tmp_path / "run"
    child = Child(job_command(run_dir, step_seconds=0.05, sigint_in_save=True, **job))
    assert child.wait_for("step", step=2) is not None, child.stderr
    child.process.send_signal(signal.SIGINT)  # the first: checkpoint at the next boundary
    code = child.finish()
    TALLY.add(fault="SIGINTs")
    assert "fault: SIGINT while the emergency checkpoint is being written" in child.stderr, child.stderr[-3000:]
    assert code != 0, child.stderr[-3000:]
    found = audit([run_dir / "checkpoints", run_dir / "checkpoints" / "emergency"], job["kib"])
    assert not found.bad and not found.invalid and not found.valid, (found.bad, found.invalid, found.valid)
    assert verify_in_process(run_dir / "checkpoints")[0] == 0

    restart = Child(job_command(run_dir, report_only=True, **job))
    assert restart.finish() == 0, restart.stderr[-3000:]
    assert restart.event("resumed") == {"event": "resumed", "run_dir": str(run_dir), "checkpoint": None, "step": 0,
                                        "problem": None}
