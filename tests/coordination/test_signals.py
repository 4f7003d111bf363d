"""Signal recording: handler hand-over, and Ctrl-C twice (signal names: tests/config/test_settings.py)."""

from __future__ import annotations

import os
import signal

import pytest

from resilient.coordination._signals import SignalRecorder


def test_recorder_only_records_and_gives_the_handlers_back() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    recorder = SignalRecorder([signal.SIGUSR2])
    recorder.install(stacklevel=2)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert list(recorder.received) == [signal.SIGUSR2]
    finally:
        recorder.uninstall()
    assert signal.getsignal(signal.SIGUSR2) == before


def test_a_second_ctrl_c_raises_at_once_and_says_it_was_forced() -> None:
    recorder = SignalRecorder([signal.SIGINT])
    recorder.install(stacklevel=2)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert list(recorder.received) == [signal.SIGINT] and not recorder.forced
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert recorder.forced
    finally:
        recorder.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
