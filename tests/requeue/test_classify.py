"""Why a job stopped, from recorded `scontrol show job` output: every cause, without a cluster.

The situations and their fields are those observed on the test cluster (slurm/README.md); the
recordings are described in recorded/README.md.
"""

from __future__ import annotations

import signal

import psutil
import pytest

from resilient.requeue import (
    EXIT_STOPPED,
    LOCAL_REQUEUE_EXIT,
    SIGNAL_DELAY_ENV,
    Cause,
    Host,
    LocalHost,
    SlurmHost,
    classify_local,
    classify_slurm,
    detect_host,
)
from resilient.slurm import JobInfo, parse_job

from ._recorded import RecordedScheduler, at, recording

WARNING = signal.SIGUSR2
TERM = signal.SIGTERM


def _slurm(name: str, received: set[int], now: str, *, deadline_hit: bool = False,
           signal_delay_s: float | None = None) -> Cause:
    return classify_slurm(parse_job(recording(name)), received, WARNING, deadline_hit, now=at(now),
                          signal_delay_s=signal_delay_s)


@pytest.mark.parametrize("received", [{WARNING}, {TERM}, {WARNING, TERM}])
def test_a_preemption_is_told_by_its_preempt_time_whatever_the_signal(received: set[int]) -> None:
    assert _slurm("preempted_grace", received, "2026-11-28T21:10:21") == Cause.PREEMPTED
    assert _slurm("preempted_oneliner", received, "2026-11-28T21:10:21") == Cause.PREEMPTED


def test_a_preemption_wins_over_the_deadline_and_a_near_limit() -> None:
    assert _slurm("preempted_grace", {TERM}, "2026-11-28T21:18:05", deadline_hit=True) == Cause.PREEMPTED


@pytest.mark.parametrize("signal_delay_s", [30.0, None])  # as submitted, and a job that does not know its delay
def test_the_warning_signal_before_the_limit_is_the_time_limit(signal_delay_s: float | None) -> None:
    # The warning came 47 s before a 1-minute limit, asked for 30 s before (SLURM's ~30 s loop).
    assert _slurm("time_limit_warning", {WARNING}, "2026-11-28T21:08:19",
                  signal_delay_s=signal_delay_s) == Cause.TIME_LIMIT


def test_the_warning_further_from_the_limit_than_its_window_is_a_fire_drill() -> None:
    # 510 s before the end: outside 120 s + 60 s of early slack, and outside the 300 s guess.
    assert _slurm("fire_drill", {WARNING}, "2026-11-28T21:09:36", signal_delay_s=120) == Cause.PREEMPTED
    assert _slurm("fire_drill", {WARNING}, "2026-11-28T21:09:36") == Cause.PREEMPTED
    # 100 s before: a warning asked for 60 s before may come that early; one asked for 30 s may not.
    assert _slurm("fire_drill", {WARNING}, "2026-11-28T21:16:26", signal_delay_s=60) == Cause.TIME_LIMIT
    assert _slurm("fire_drill", {WARNING}, "2026-11-28T21:16:26", signal_delay_s=30) == Cause.PREEMPTED


def test_a_sigterm_far_from_the_limit_on_a_running_job_stands_for_a_preemption() -> None:
    assert _slurm("time_limit_warning", {TERM}, "2026-11-28T21:08:19") == Cause.PREEMPTED


def test_any_signal_within_the_slack_of_the_natural_end_is_the_time_limit() -> None:
    assert _slurm("time_limit_warning", {TERM}, "2026-11-28T21:09:01") == Cause.TIME_LIMIT
    assert _slurm("time_limit_warning", {TERM}, "2026-11-28T21:09:00") == Cause.PREEMPTED


def test_reason_time_limit_is_the_time_limit() -> None:
    assert _slurm("time_limit_reached", {TERM}, "2026-11-28T21:09:19") == Cause.TIME_LIMIT


def test_a_users_scancel_is_a_cancellation() -> None:
    assert _slurm("scancel", {TERM}, "2026-11-28T21:11:47") == Cause.CANCELLED
    assert classify_slurm(JobInfo({"JobState": "CANCELLED"}), {TERM}, WARNING, False, now=0.0,
                          signal_delay_s=None) == Cause.CANCELLED


def test_the_deadline_is_the_time_limit_unless_preempted() -> None:
    assert _slurm("scancel", {TERM}, "2026-11-28T21:11:47", deadline_hit=True) == Cause.TIME_LIMIT
    assert _slurm("unlimited", set(), "2026-11-28T21:12:06", deadline_hit=True) == Cause.TIME_LIMIT


def test_without_a_time_limit_the_warning_is_a_fire_drill() -> None:
    assert _slurm("unlimited", {WARNING}, "2026-11-28T21:12:06") == Cause.PREEMPTED


@pytest.mark.parametrize(("now", "received", "deadline_hit", "cause"), [
    (875.0, {WARNING}, False, Cause.TIME_LIMIT),  # 120 s + 5 s of slack before the controller's timeout
    (874.0, {WARNING}, False, Cause.PREEMPTED),  # earlier: a fire drill
    (990.0, {TERM}, False, Cause.PREEMPTED),  # not the warning: someone else's signal
    (100.0, {TERM}, True, Cause.TIME_LIMIT),
])
def test_a_local_task_is_at_its_time_limit_only_near_the_controllers_timeout(
        now: float, received: set[int], deadline_hit: bool, cause: Cause) -> None:
    assert classify_local(1000.0, 120.0, received, WARNING, deadline_hit, now=now) == cause


def test_a_local_task_without_a_timeout_is_preempted() -> None:
    assert classify_local(None, 120.0, {WARNING}, WARNING, False, now=10**10) == Cause.PREEMPTED


def test_a_plain_process_is_interrupted_and_stops() -> None:
    host = Host()
    assert host.classify({WARNING}, WARNING, deadline_hit=True) == Cause.INTERRUPTED
    assert host.end_time() is None and not host.can_requeue
    assert host.requeue(Cause.INTERRUPTED) == EXIT_STOPPED


def test_a_slurm_host_asks_its_scheduler_and_reads_its_clock() -> None:
    scheduler = RecordedScheduler("time_limit_warning")
    host = SlurmHost(job_id="4711", signal_delay_s=30, scheduler=scheduler, clock=lambda: at("2026-11-28T21:08:19"))
    assert host.end_time() == at("2026-11-28T21:09:06")
    assert host.classify({WARNING}, WARNING, deadline_hit=False) == Cause.TIME_LIMIT
    assert scheduler.asked == ["4711", "4711"]
    assert host.requeue(Cause.TIME_LIMIT) == 0 and scheduler.requeued == ["4711"]


def test_a_slurm_jobs_end_is_unknown_without_a_limit() -> None:
    assert SlurmHost(job_id="4711", scheduler=RecordedScheduler("unlimited")).end_time() is None


def test_a_local_host_times_its_end_from_its_own_start() -> None:
    started = psutil.Process().create_time()
    host = LocalHost(job_id="99", timeout_s=600, signal_delay_s=120, clock=lambda: started + 500)
    assert host.end_time() == started + 600
    assert host.classify({WARNING}, WARNING, deadline_hit=False) == Cause.TIME_LIMIT
    assert LocalHost(timeout_s=None).end_time() is None
    assert host.requeue(Cause.PREEMPTED) == LOCAL_REQUEUE_EXIT


def test_the_host_is_detected_from_the_launchers_environment() -> None:
    local = detect_host({"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "321",
                         "SUBMITIT_LOCAL_TIMEOUT_S": "3600", "SUBMITIT_LOCAL_SIGNAL_DELAY_S": "120"})
    assert isinstance(local, LocalHost) and (local.job_id, local.timeout_s, local.signal_delay_s) == ("321", 3600, 120)
    scheduler = RecordedScheduler("fire_drill")
    array = detect_host({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "3",
                         SIGNAL_DELAY_ENV: "90"}, scheduler)
    assert isinstance(array, SlurmHost) and (array.job_id, array.signal_delay_s) == ("10_3", 90)
    assert array.scheduler is scheduler
    plain = detect_host({SIGNAL_DELAY_ENV: "90"})
    assert type(plain) is Host and plain.job_id is None


def test_causes_keep_the_values_status_json_counts_them_by() -> None:
    assert [cause.value for cause in Cause] == [
        "preempted", "time_limit", "cancelled", "interrupted", "ctrl_c", "crashed"]
    assert f"{Cause.CTRL_C}" == "ctrl_c" and Cause("time_limit") is Cause.TIME_LIMIT
