"""Running a framework's test script as a 2-rank job of real processes, torchrun-style (shared by
the Lightning and Hugging Face tests)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from resilient.rundir import Event, read_events

from ..loop._jobs import rank_envs

EXIT_STOPPED = 75
WORLD = 2


def launch(script: Path, run_dir: Path, out: Path, *extra: str) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, str(script), "--run-dir", str(run_dir), "--out", str(out), *extra],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for env in rank_envs(WORLD)]


def run_all(script: Path, run_dir: Path, out: Path, *extra: str, code: int = 0) -> list[tuple[str, str]]:
    """Both ranks to their end, each exiting with `code`; each rank's stdout and stderr, in rank order."""
    procs = launch(script, run_dir, out, *extra)
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == code, stderr
    return outputs


def run(script: Path, run_dir: Path, out: Path, *extra: str, code: int = 0) -> tuple[str, str]:
    """Both ranks to their end, each exiting with `code`; rank 0's stdout and stderr."""
    return run_all(script, run_dir, out, *extra, code=code)[0]


def status(run_dir: Path) -> dict[str, object]:
    return json.loads((run_dir / "status.json").read_text())


def reference(script: Path, base: Path) -> Path:
    """The weights of the job never interrupted."""
    run(script, base / "run", base / "out.pt")
    return base / "out.pt"


def stop_then_resume(script: Path, tmp_path: Path, signal_name: str, signal_rank: int,
                     emergency: Callable[[Path], Path]) -> tuple[Path, str]:
    """Rank `signal_rank` sends itself SIG`signal_name` after step 10; both ranks stop at one step,
    with the run `stopped` and `emergency(run_dir)` committed; the same job resumes to the end.
    The weights it wrote and rank 0's stdout of the resumed start."""
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    run(script, run_dir, out, "--signal-at-step", "10", "--signal", signal_name, "--signal-rank", str(signal_rank),
        code=EXIT_STOPPED)
    assert (emergency(run_dir) / "MANIFEST.json").is_file()
    assert status(run_dir)["state"] == "stopped"
    stdout, _ = run(script, run_dir, out)
    assert f"resumed from {emergency(run_dir)}" in stdout
    assert status(run_dir)["state"] == "completed"
    # events.jsonl tells it as `resilient status` shows it: the emergency checkpoint, the resume from it.
    told = [(event["event"], event.get("path") or event.get("checkpoint")) for event in read_events(run_dir)
            if event["event"] in (Event.CHECKPOINT, Event.RESUMED)]
    assert (Event.CHECKPOINT, str(emergency(run_dir))) in told, told
    assert told.index((Event.RESUMED, str(emergency(run_dir)))) > told.index((Event.CHECKPOINT, str(emergency(run_dir))))
    return out, stdout


def killed(script: Path, run_dir: Path, out: Path, *extra: str) -> None:
    """Start the job; rank 0 SIGKILLs itself as `extra` tells it, and its peer is killed after it
    (stuck in a collective, or failing: SLURM would kill it too)."""
    procs = launch(script, run_dir, out, *extra)
    procs[0].wait(timeout=240)
    assert procs[0].returncode == -signal.SIGKILL, procs[0].communicate()[1]
    procs[1].kill()
    for proc in procs:
        proc.communicate()
