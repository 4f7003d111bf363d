"""The requeue policy: which bound counts which cause, and what counts as a bound."""

from __future__ import annotations

import pytest

from resilient.requeue import Cause
from resilient.requeue._policy import RequeuePolicy

_INFRASTRUCTURE = (Cause.PREEMPTED, Cause.TIME_LIMIT, Cause.CANCELLED, Cause.INTERRUPTED)


@pytest.mark.parametrize("cause", _INFRASTRUCTURE)
def test_by_default_the_cluster_may_bring_a_run_back_without_bound(cause: Cause) -> None:
    assert RequeuePolicy().allows(cause, 10**6)


def test_by_default_a_crash_is_never_requeued() -> None:
    assert not RequeuePolicy().allows(Cause.CRASHED, 0)


@pytest.mark.parametrize("cause", _INFRASTRUCTURE)
def test_max_requeues_bounds_what_is_not_a_crash(cause: Cause) -> None:
    policy = RequeuePolicy(max_requeues=2, max_crash_requeues=5)
    assert policy.allows(cause, 1) and not policy.allows(cause, 2)
    assert not RequeuePolicy(max_requeues=0).allows(cause, 0)


def test_max_crash_requeues_bounds_crashes_alone() -> None:
    policy = RequeuePolicy(max_requeues=0, max_crash_requeues=2)
    assert policy.allows(Cause.CRASHED, 1) and not policy.allows(Cause.CRASHED, 2)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"max_requeues": -1}, ValueError, "max_requeues must be >= 0, not -1"),
    ({"max_requeues": True}, TypeError, r"max_requeues must be an int >= 0 or None \(no bound\), not True"),
    ({"max_crash_requeues": None}, TypeError, "max_crash_requeues must be an int >= 0, not None"),
    ({"max_crash_requeues": 1.5}, TypeError, "max_crash_requeues must be an int >= 0, not 1.5"),
])
def test_bad_bounds_are_refused_by_name(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RequeuePolicy(**kwargs)
