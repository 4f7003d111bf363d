"""The background writer: one write at a time, its outcome handed to the main thread, and a Ctrl-C
while waiting leaving the write in flight (never a writer torn down mid-write)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
import torch

from resilient.loop._background import BackgroundWriter


def _files() -> tuple[dict[str, torch.Tensor], None]:
    return {"w": torch.ones(4)}, None


def test_the_write_gets_a_copy_and_its_result_comes_back_once_finished():
    writer = BackgroundWriter()
    files = _files()
    release = threading.Event()
    seen = {}

    def write(copy):
        release.wait()
        seen["copy"] = copy
        return ["committed"]

    assert writer.take(files, write) and writer.busy and not writer.finished
    files[0]["w"].add_(1)  # training goes on
    release.set()
    assert writer.wait() == ["committed"] and writer.finished and not writer.busy
    assert torch.equal(seen["copy"][0]["w"], torch.ones(4))


def test_a_committed_write_is_recorded_from_the_writer_thread_and_a_failed_one_is_not():
    recorded = []

    def record(committed, seconds):
        recorded.append((committed, threading.current_thread().name))

    writer = BackgroundWriter()
    writer.take(_files(), lambda copy: ["a"], record)
    writer.wait()
    writer.take(_files(), lambda copy: 1 / 0, record)
    with pytest.raises(ZeroDivisionError):
        writer.wait()
    assert recorded == [(["a"], "resilient-checkpoint-writer")]


def test_one_write_at_a_time_and_nothing_to_wait_for_is_a_mistake():
    writer = BackgroundWriter()
    release = threading.Event()
    writer.take(_files(), lambda copy: release.wait() and [])
    with pytest.raises(RuntimeError, match="still in flight"):
        writer.take(_files(), lambda copy: [])
    release.set()
    writer.wait()
    with pytest.raises(RuntimeError, match="no background write"):
        writer.wait()


def test_a_failed_write_raises_its_own_error_in_the_waiting_thread():
    writer = BackgroundWriter()

    def write(copy):
        raise OSError(28, "No space left on device")

    writer.take(_files(), write)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    assert writer.take(_files(), lambda copy: ["next"]) and writer.wait() == ["next"]  # the next one is fine


def _interrupt_once_waiting(main: int, release: threading.Event) -> None:
    """Ctrl-C the main thread once it is blocked inside `BackgroundWriter.wait` (no other event says
    so); should the interrupt not end that wait, release the write a minute later so that the test
    fails instead of hanging."""
    while True:
        frame = sys._current_frames().get(main)
        while frame is not None and frame.f_code is not BackgroundWriter.wait.__code__:
            frame = frame.f_back
        if frame is not None:
            os.kill(os.getpid(), signal.SIGINT)
            release.wait(60)
            release.set()
            return
        time.sleep(0.001)


def test_a_ctrl_c_while_waiting_leaves_the_write_in_flight_and_waitable():
    """CPython 3.11 marks a thread whose join a signal handler interrupted as stopped while it still
    runs; the writer is waited for through an Event instead, which a Ctrl-C leaves consistent."""
    writer = BackgroundWriter()
    started, release = threading.Event(), threading.Event()

    def write(copy):
        started.set()
        release.wait()
        return ["done"]

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever this process inherited
    try:
        writer.take(_files(), write)
        started.wait()
        threading.Thread(target=_interrupt_once_waiting, args=(threading.get_ident(), release)).start()
        with pytest.raises(KeyboardInterrupt):
            writer.wait()
        writers = [thread for thread in threading.enumerate() if thread.name == "resilient-checkpoint-writer"]
        assert writer.busy and len(writers) == 1 and writers[0].is_alive() and not writers[0].daemon
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)
    assert writer.wait() == ["done"]


def test_buffers_made_in_the_background_are_waited_for_by_the_first_save():
    writer = BackgroundWriter()
    files = ({"w": torch.randn(1 << 16)}, None)
    writer.reserve(files)
    assert writer.take(files, lambda copy: [copy[0]["w"].sum().item()])
    assert writer.wait() == [files[0]["w"].sum().item()]
    writer.reserve(({"sparse": torch.eye(2).to_sparse()}, None))  # not stageable: left to take() to report
    assert not writer.busy


@pytest.mark.parametrize("world_size, step, settles", [(2, 6, False), (2, 7, True), (1, 5, False), (1, 6, True)])
def test_a_written_flag_seen_before_the_write_in_flight_began_does_not_settle_it(tmp_path, world_size, step, settles):
    """With several ranks the flag is agreed one boundary after rank 0 saw it: by then a save at
    that boundary may have settled the write it was about and started another, not to be waited for."""
    from resilient.coordination import DistInfo
    from resilient.loop._journal import Journal
    from resilient.loop._saver import Saver, _InFlight
    from resilient.loop._saving import OnSaveError

    saver = Saver(DistInfo(1, world_size, 1, owns_group=False), Journal(tmp_path, None, writes=False), [], {},
                  tmp_path, OnSaveError.STOP, True)
    saver._in_flight = _InFlight((), [], [], step=5, full=True)  # started at step 5's boundary
    settled = []
    saver.settle = lambda: settled.append(True)
    saver.settle_written(step)
    assert bool(settled) == settles


def test_a_stopping_run_ends_the_reservation_in_flight_and_a_later_save_still_works():
    writer = BackgroundWriter()
    files = ({"w": torch.randn(1 << 16)}, None)
    writer.reserve(files)
    writer.stop_reserving()
    assert not writer.busy
    writer.stop_reserving()  # nothing in flight: nothing to do
    assert writer.take(files, lambda copy: [copy[0]["w"].sum().item()])
    writer.stop_reserving()  # a write in flight is not a reservation: it is left to finish
    assert writer.busy and writer.wait() == [files[0]["w"].sum().item()]
