"""`resilient report` on a real job that was preempted once and SIGKILLed once, then completed.

One local-executor job covers it all (each start costs seconds of importing torch): the warning
signal stops it at step 11 (its emergency checkpoint: nothing lost), and in its second start, held
at step 14 by a gate once its step-12 checkpoint is committed, its task is SIGKILLed: no end event,
so what the report knows of that start comes from the heartbeat the next submission reads.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from resilient.rundir import goodput, read_events, read_heartbeat

from ._cli import ENV, REPO, Follower, assert_usage_error, cli, events, kill_jobs, train_model_file, wait_until

# The gate the warning signal reaches the job at, and the step it stops at (the next boundary); the
# gate the task is killed at, and its last checkpoint then (they are every 4 steps).
PREEMPT_GATE, STOPPED_AT = 10, 11
KILLED_AT, SAVED_AT = 14, 12


def _kill_task(run_dir: Path) -> None:
    """SIGKILL the job's task (rank 0), as the kernel's OOM killer would: its controller then ends."""
    controller = psutil.Process(int(json.loads((run_dir / "job.json").read_text())["job_id"]))
    [task] = controller.children()
    task.send_signal(signal.SIGKILL)


def _committed(run_dir: Path, step: int) -> bool:
    return any(event["event"] == "checkpoint" and event["step"] == step for event in events(run_dir))


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a job preempted at step 11, SIGKILLed at step 14, resubmitted, completed."""
    root = tmp_path_factory.mktemp("report")
    gate, run_dir = root / "gate", root / "run"
    gate.mkdir()
    job_file = train_model_file(root, out=str(root / "out.pt"), gate_steps=[PREEMPT_GATE, KILLED_AT], gate_dir=str(gate))
    first = Follower(job_file, "-o", f"run_dir={run_dir}")
    try:
        first.wait_for(gate / f"ready-{PREEMPT_GATE}")
        assert cli("preempt", run_dir).returncode == 0
        first.wait_for(gate / f"ready-{KILLED_AT}")
        wait_until(lambda: _committed(run_dir, SAVED_AT), f"the step-{SAVED_AT} checkpoint", unless=first.ended)
        _kill_task(run_dir)
        assert first.finish().returncode != 0
        (gate / f"go-{KILLED_AT}").touch()  # the next start goes past the gate
        again = Follower(job_file, "-o", f"run_dir={run_dir}")
        result = again.finish()
        assert result.returncode == 0, result.stderr
        again.stop()
    finally:
        kill_jobs(root)
        first.stop()
    return run_dir


def test_the_report_has_both_interruptions_with_the_steps_each_lost(reported: Path) -> None:
    done = cli("report", reported, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    lost = [(each["cause"], each["step"], each["resumed_at"], each["steps_lost"]) for each in report["interruptions"]]
    assert lost == [("preempted", STOPPED_AT, STOPPED_AT, 0), ("lost", KILLED_AT, SAVED_AT, KILLED_AT - SAVED_AT)]
    parts = report["parts"]
    assert sum(part["seconds"] for part in parts.values()) == pytest.approx(report["wall_seconds"], rel=0.01)
    assert parts["stopping"]["seconds"] > 0 and parts["queued"]["seconds"] > 0 and parts["training"]["seconds"] > 0
    assert len(report["starts"]) == 3 and report["state"] == "completed" and not report["live"]
    text = cli("report", reported)
    assert text.returncode == 0 and "STEPS LOST" in text.stdout, text.stdout
    shown = text.stdout.splitlines()[0].rsplit("goodput ", 1)[1]  # as status shows it, rounded the same way
    assert shown.endswith("%") and float(shown[:-1]) == pytest.approx(report["goodput_percent"], abs=0.051)
    status = cli("status", reported)
    assert f"  {shown}  " in status.stdout, status.stdout


def test_each_start_records_its_first_step_and_each_save_its_stall(reported: Path) -> None:
    history = read_events(reported)
    assert [(event["event"], event.get("step")) for event in history if event["event"] in ("first_step", "lost")] == [
        ("first_step", 1), ("first_step", STOPPED_AT + 1), ("lost", KILLED_AT), ("first_step", SAVED_AT + 1)]
    saves = [event for event in history if event["event"] == "checkpoint"]
    assert saves and all("stall_seconds" in event and "stalled_at" in event for event in saves)
    for event in saves:
        stall_ended = datetime.fromisoformat(event["stalled_at"]).timestamp() + event["stall_seconds"]
        committed = datetime.fromisoformat(event["time"]).timestamp()
        if event["rule"]["kind"] == "emergency":  # synchronous: training waits for the commit
            assert stall_ended <= committed + 0.003, event
        else:  # asynchronous: the stall ended as the background write began, `seconds` before its commit
            assert stall_ended <= committed - event["seconds"] + 0.003, event


def test_the_timeline_is_a_png_with_one_row_per_start(reported: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread  # the report extra, which the test extra installs

    from resilient.cli._timeline import timeline_figure

    picture = tmp_path / "timeline.png"
    drawn = cli("report", reported, "--png", picture)
    assert drawn.returncode == 0, drawn.stderr
    height, width, _ = imread(picture).shape
    assert width == 1000 and height > 100
    result = goodput(read_events(reported), now=0.0, live=False, heartbeat=read_heartbeat(reported))
    figure = timeline_figure([(f"start {number}", lane) for number, lane in enumerate(result.lanes, start=1)])
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == ["start 1", "start 2", "start 3"]


_WITHOUT_MATPLOTLIB = """
import runpy, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
sys.argv = ["resilient", *sys.argv[1:]]
runpy.run_module("resilient", run_name="__main__")
"""


def test_png_without_matplotlib_names_the_extra_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", _WITHOUT_MATPLOTLIB, "report", "any-run", "--png", "x.png"],
                            cwd=tmp_path, env=dict(ENV, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                            timeout=120, check=False)
    assert_usage_error(result, "--png needs matplotlib: pip install 'resilient[report]'")
    assert not (tmp_path / "x.png").exists()


def test_a_damaged_events_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text('{"state": "completed"}')
    (run_dir / "events.jsonl").write_text('{"time": "yesterday", "event": "started"}\n')
    assert_usage_error(cli("report", run_dir), "events.jsonl is damaged: line 1: time 'yesterday'", code=1)
