"""The target path's one writer thread: writes run in the order they were queued, while the
caller reads, decodes or receives the next data.

The queue is bounded (a few chunks in flight), so memory stays small and a slow target slows the
feeder down rather than filling RAM. The first exception in the thread is kept and raised in the
caller's thread at its next ``put`` or ``drain`` (and queued jobs after it are skipped, never run
on a target that already failed); a cancel Event stops a caller waiting on a full queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from clonebay.errors import CancelledError

QUEUE_DEPTH = 8  # jobs in flight (each usually one chunk of at most 4 MiB)


class OrderedWriter:
    """Runs queued jobs one after the other in a thread of its own."""

    def __init__(self, cancel: threading.Event, depth: int = QUEUE_DEPTH) -> None:
        self.cancel = cancel
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="clonebay-write", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                if self.error is None and not self.cancel.is_set():
                    job()
            except BaseException as exc:  # kept for the caller; later jobs are skipped
                self.error = exc
            finally:
                self.jobs.task_done()

    def put(self, job: Callable[[], None]) -> None:
        """Queue ``job``; raises the thread's error, or CancelledError on cancel."""
        while True:
            self._raise()
            try:
                self.jobs.put(job, timeout=0.2)
                return
            except queue.Full:
                if self.cancel.is_set():
                    raise CancelledError("cancelled by the user") from None

    def drain(self) -> None:
        """Wait until every job queued so far has run; raises the thread's error."""
        if self.thread.is_alive():
            self.jobs.join()
        self._raise()

    def stop(self) -> None:
        """End the thread (jobs still queued after an error or a cancel are skipped)."""
        if not self.thread.is_alive():
            return
        if self.error is None:
            self.error = _StoppedError()
        while True:
            try:
                self.jobs.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None and not isinstance(self.error, _StoppedError):
            raise self.error
        if self.cancel.is_set():
            raise CancelledError("cancelled by the user")


class _StoppedError(Exception):
    """Marks a writer that was stopped on purpose (nothing to report)."""
