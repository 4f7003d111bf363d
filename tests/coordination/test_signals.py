"""Signal recording: names, which signals may warn, handler hand-over, and Ctrl-C twice."""

from __future__ import annotations

import os
import signal

import pytest

from resilient.coordination._signals import SignalRecorder, signal_number


@pytest.mark.parametrize("value, expected", [("USR2", signal.SIGUSR2), ("sigterm", signal.SIGTERM), (10, 10)])
def test_signal_names_and_numbers(value: str | int, expected: int) -> None:
    assert signal_number(value, name="warning_signal") == expected


@pytest.mark.parametrize("value, error", [("USR9", ValueError), (True, TypeError), (9999, ValueError), (1.5, TypeError)])
def test_bad_signals_name_the_parameter(value: object, error: type) -> None:
    with pytest.raises(error, match="warning_signal"):
        signal_number(value, name="warning_signal")  # type: ignore[arg-type]


def test_recorder_only_records_and_gives_the_handlers_back() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    recorder = SignalRecorder([signal.SIGUSR2])
    recorder.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert list(recorder.received) == [signal.SIGUSR2]
    finally:
        recorder.uninstall()
    assert signal.getsignal(signal.SIGUSR2) == before


@pytest.mark.parametrize("value", ["KILL", "SIGSTOP", 9, "INT", "CHLD", "SEGV"])
def test_signals_that_cannot_warn_are_refused_with_the_reason(value: str | int) -> None:
    with pytest.raises(ValueError, match=r"warning_signal=SIG\w+ cannot be the warning signal: .*USR1 or USR2"):
        signal_number(value, name="warning_signal")


def test_a_second_ctrl_c_raises_at_once_and_says_it_was_forced() -> None:
    recorder = SignalRecorder([signal.SIGINT])
    recorder.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert list(recorder.received) == [signal.SIGINT] and not recorder.forced
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert recorder.forced
    finally:
        recorder.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
