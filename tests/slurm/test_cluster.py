"""The local SLURM cluster works the way resilient's SLURM support assumes (see slurm/README.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import SlurmCluster

# Records every signal resilient cares about, with the job's restart count and whether slurmctld
# sees a preemption in progress, then idles; a rerun (after requeue) just records its start.
# SIGCONT is deliberately not trapped: bash drops one of two trapped signals that arrive together,
# and SLURM sends SIGCONT alongside every other signal (see README, "bash traps").
SIGNAL_RECORDER = """\
preempt_time() {{ scontrol show job $SLURM_JOB_ID | grep -o 'PreemptTime=[^ ]*'; }}
log() {{ echo "$1 restart=${{SLURM_RESTART_COUNT:-0}} $(preempt_time)" >> {log}; }}
trap 'log USR2' USR2
trap 'log TERM' TERM
log start
[[ ${{SLURM_RESTART_COUNT:-0}} -ge 1 ]] && exit 0
while true; do sleep 1 & wait $!; done
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_start_again_is_a_no_op(slurm_cluster: SlurmCluster) -> None:
    def status() -> str:
        return subprocess.run(["bash", str(slurm_cluster.script), "status"], capture_output=True, text=True,
                              check=True, timeout=60).stdout

    def settled() -> str:
        """The status once every node is idle: a job cancelled just before (the previous test's) can
        leave a node planned ('plnd') for a moment, until the scheduler's next pass."""
        text = status()
        nodes = [line for line in text.splitlines() if line.startswith(("low", "high"))]
        return text if nodes and all(" idle " in line for line in nodes) else ""

    before = slurm_cluster.wait_until(settled, what="idle nodes")
    subprocess.run(["bash", str(slurm_cluster.script), "start"], check=True, capture_output=True, timeout=120)
    assert status() == before  # same daemon pids, same configuration, nodes still idle
    assert "slurmd-n2: running" in before


def test_job_spans_both_nodes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = slurm_cluster.sbatch(
        "scontrol show hostnames $SLURM_JOB_NODELIST | tr '\\n' ' '; echo\n"
        "getent hosts n1 n2 | wc -l\n"
        "srun bash -c 'echo task $SLURM_PROCID/$SLURM_NTASKS on $SLURMD_NODENAME'\n",
        "--nodes=2", "--ntasks-per-node=1", workdir=tmp_path,
    )
    slurm_cluster.wait_for(job, "COMPLETED", timeout=60)
    lines = slurm_cluster.output(job).splitlines()
    assert lines[0].split() == ["n1", "n2"]
    assert lines[1] == "2"  # node names resolve, as a rendezvous address taken from them must
    assert sorted(lines[2:]) == ["task 0/2 on n1", "task 1/2 on n2"]


def test_preempted_job_gets_user_signal_and_comes_back(slurm_cluster: SlurmCluster,
                                                       tmp_path: Path) -> None:
    log = tmp_path / "signals.log"
    job = slurm_cluster.sbatch(SIGNAL_RECORDER.format(log=log), "--nodes=2",
                               "--signal=B:USR2@60", workdir=tmp_path)
    slurm_cluster.wait_for(job, "RUNNING")
    slurm_cluster.wait_until(lambda: _lines(log), what="the job's traps to be set")

    preemptor = slurm_cluster.preempt()
    slurm_cluster.wait_until(lambda: len(_lines(log)) >= 2, what="the preemption signal")
    # Grace period: the job still runs and slurmctld already knows it is being preempted.
    assert slurm_cluster.state(job) == "RUNNING"
    usr2 = _lines(log)[1]
    assert usr2.startswith("USR2 restart=0 PreemptTime=")
    assert "PreemptTime=None" not in usr2

    # GraceTime (30 s) later SLURM kills the job and requeues it, held for 120 s.
    slurm_cluster.wait_for(job, "PENDING", timeout=90)
    record = slurm_cluster.job(job)
    assert (record["Restarts"], record["Reason"]) == ("1", "BeginTime")
    slurm_cluster.release(job)
    slurm_cluster.wait_for(job, "COMPLETED", timeout=60)
    assert slurm_cluster.state(preemptor) == "COMPLETED"
    assert [line.split()[:2] for line in _lines(log)] == [
        ["start", "restart=0"], ["USR2", "restart=0"], ["TERM", "restart=0"], ["start", "restart=1"],
    ]


def test_cancel_mode_with_term_only(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    log = tmp_path / "signals.log"
    with slurm_cluster.reconfigure(preempt_mode="cancel", preempt_signal="term", grace_time=5):
        job = slurm_cluster.sbatch(SIGNAL_RECORDER.format(log=log), "--nodes=2",
                                   "--signal=B:USR2@60", workdir=tmp_path)
        slurm_cluster.wait_for(job, "RUNNING")
        slurm_cluster.wait_until(lambda: _lines(log), what="the job's traps to be set")
        slurm_cluster.preempt()
        slurm_cluster.wait_for(job, "PREEMPTED", timeout=60)
    record = slurm_cluster.job(job)
    assert record["Restarts"] == "0"  # cancelled, not requeued
    # Without preempt_send_user_signal the job's --signal never comes: SIGTERM is all it gets.
    assert [line.split()[0] for line in _lines(log)] == ["start", "TERM"]


def test_reconfigure_rejects_unknown_mode(slurm_cluster: SlurmCluster) -> None:
    with pytest.raises(ValueError, match="preempt_mode"), slurm_cluster.reconfigure(preempt_mode="suspend"):
        pass
