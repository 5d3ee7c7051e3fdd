"""The target path's writer thread (audit #20: the stream restore's writer cleared its error and
could run queued writes after a failed one): jobs run in order; after a job fails, no later job
runs, and the error reaches the caller at its next put or drain; a cancel stops a waiting put."""

from __future__ import annotations

import functools
import threading

import pytest

from clonebay.engine.target.writer import OrderedWriter
from clonebay.errors import CancelledError, DeviceError


def test_jobs_run_in_order() -> None:
    done: list[int] = []
    writer = OrderedWriter(threading.Event(), depth=2)
    for i in range(50):
        writer.put(functools.partial(done.append, i))
    writer.drain()
    writer.stop()
    assert done == list(range(50))


def test_nothing_runs_after_a_failed_job_and_the_error_stays() -> None:
    ran: list[int] = []
    gate = threading.Event()
    writer = OrderedWriter(threading.Event(), depth=8)

    def fail() -> None:
        gate.wait(5)
        raise DeviceError("write error at byte 4096")

    writer.put(fail)
    for i in range(5):  # queued behind the failing job
        writer.put(functools.partial(ran.append, i))
    gate.set()
    with pytest.raises(DeviceError, match="byte 4096"):
        writer.drain()
    with pytest.raises(DeviceError):  # kept: a second call raises it again, never clears it
        writer.put(lambda: ran.append(99))
    writer.stop()
    assert ran == []


def test_cancel_stops_a_put_waiting_on_a_full_queue() -> None:
    cancel = threading.Event()
    block = threading.Event()
    writer = OrderedWriter(cancel, depth=1)

    def wait() -> None:
        block.wait(5)

    writer.put(wait)
    writer.put(lambda: None)  # fills the queue
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(CancelledError):
        writer.put(lambda: None)
    block.set()
    writer.stop()
    assert not writer.thread.is_alive()
