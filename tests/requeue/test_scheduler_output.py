"""Parsing what SLURM prints: records in both of scontrol's forms, durations, queue states, ids."""

from __future__ import annotations

import pytest

from resilient.slurm import (
    ENDED_STATES,
    WAITING_STATES,
    job_id_from_env,
    parse_duration,
    parse_job,
    parse_queue_state,
)

from ._recorded import at, recording


def test_both_forms_of_a_record_read_the_same() -> None:
    lines, one_line = parse_job(recording("preempted_grace")), parse_job(recording("preempted_oneliner"))
    assert lines == one_line
    assert lines.fields["Restarts"] == "0" and lines.fields["NodeList"] == "node[1-2]"
    assert lines.fields["Power"] == "" and lines.fields["AllocNode:Sid"] == "head:4121"


def test_a_record_names_state_reason_times_and_preemption() -> None:
    job = parse_job(recording("time_limit_reached"))
    assert (job.state, job.reason, job.preempted) == ("COMPLETING", "TimeLimit", False)
    assert job.start_time == at("2026-11-28T21:08:06") and job.end_time == at("2026-11-28T21:09:19")
    assert job.time_limit_s == 60
    assert parse_job(recording("preempted_grace")).preempted


def test_an_unlimited_job_has_no_end_and_no_limit() -> None:
    job = parse_job(recording("unlimited"))
    assert job.end_time is None and job.time_limit_s is None


@pytest.mark.parametrize(("raw", "seconds"), [
    ("00:01:00", 60), ("02:03:04", 7384), ("1-02:03:04", 93784), ("365-00:00:00", 365 * 86400),
    ("UNLIMITED", None), ("Partition_Limit", None), ("NONE", None), ("", None), (None, None),
])
def test_time_limits(raw: str | None, seconds: int | None) -> None:
    assert parse_duration(raw) == seconds


def test_queue_states() -> None:
    assert parse_queue_state("PENDING\n") == "PENDING"
    assert parse_queue_state("RUNNING\nRUNNING\n") == "RUNNING"  # an array's tasks: the first
    assert parse_queue_state("\n") == "" and "" in ENDED_STATES  # gone from the queue: ended
    assert "REQUEUE_HOLD" in WAITING_STATES and "RUNNING" not in ENDED_STATES | WAITING_STATES


def test_the_job_id_scontrol_needs() -> None:
    assert job_id_from_env({"SLURM_JOB_ID": "12"}) == "12"
    assert job_id_from_env({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "3"}) == "10_3"
    assert job_id_from_env({"SLURM_JOB_ID": ""}) is None and job_id_from_env({}) is None
