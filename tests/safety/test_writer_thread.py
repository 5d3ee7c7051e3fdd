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
    assert not any(t.is_alive() for t in writer.threads)


def test_several_threads_keep_the_first_error_and_release_every_buffer() -> None:
    """With two writer threads (direct I/O keeps two writes in flight), a failed write still
    stops every later one, the first error is the one raised, and every job's release runs
    (a pipeline buffer shared by several targets must come back even from a failed target)."""
    writer = OrderedWriter(threading.Event(), depth=4, threads=2)
    released: list[int] = []
    ran: list[int] = []
    lock = threading.Lock()

    def job(n: int) -> None:
        with lock:
            ran.append(n)
        if n == 3:
            raise DeviceError("write error at job 3")

    def release(n: int) -> None:
        with lock:
            released.append(n)

    with pytest.raises(DeviceError, match="job 3"):
        for n in range(40):
            writer.put(lambda n=n: job(n), lambda n=n: release(n))
        writer.drain()
    writer.stop()
    queued = max(released) + 1
    assert sorted(released) == list(range(queued)), "every queued job was released once"
    assert 3 in ran and len(ran) < 40, "jobs after the failure were skipped"
