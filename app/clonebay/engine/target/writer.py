"""The target path's writer threads: writes are taken in the order they were queued, while the
caller reads, decodes or receives the next data.

With ``threads`` > 1 several writes are in flight at once (direct I/O needs that to keep a disk
busy: one 4 MiB write at a time left it idle between requests, 545 against 783 MB/s here). The
jobs of one target write distinct byte ranges (chunks, zero runs; the areas that hold partition
tables are held and written after ``drain``), so the order in which two of them complete does
not matter; anything that must follow earlier writes calls ``drain`` first.

The queue is bounded (a few chunks in flight), so memory stays small and a slow target slows the
feeder down rather than filling RAM. The first exception in a thread is kept and raised in the
caller's thread at its next ``put`` or ``drain`` (and queued jobs after it are skipped, never run
on a target that already failed); a cancel Event stops a caller waiting on a full queue. A job may
come with a ``release`` function, called once the job ran or was skipped: the data it wrote from
(a pipeline buffer shared by several targets) is then free for reuse.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from clonebay.errors import CancelledError

QUEUE_DEPTH = 8  # jobs in flight (each usually one chunk of at most 4 MiB)
_Job = tuple[Callable[[], None], Callable[[], None] | None]  # a write, and what frees its data


class OrderedWriter:
    """Runs queued jobs, taken in order, in ``threads`` threads of its own."""

    def __init__(self, cancel: threading.Event, depth: int = QUEUE_DEPTH, threads: int = 1) -> None:
        self.cancel = cancel
        self.jobs: queue.Queue[_Job | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, name=f"clonebay-write-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            item = self.jobs.get()
            try:
                if item is None:
                    return
                job, release = item
                try:
                    if self.error is None and not self.cancel.is_set():
                        job()
                finally:
                    if release is not None:
                        release()
            except BaseException as exc:  # kept for the caller; later jobs are skipped
                with self.lock:
                    if self.error is None:
                        self.error = exc
            finally:
                self.jobs.task_done()

    def put(self, job: Callable[[], None], release: Callable[[], None] | None = None) -> None:
        """Queue ``job`` (``release`` is called after it ran or was skipped); raises the
        threads' error, or CancelledError on cancel (then ``release`` is called at once)."""
        while True:
            try:
                self._raise()
            except BaseException:
                if release is not None:
                    release()
                raise
            try:
                self.jobs.put((job, release), timeout=0.2)
                return
            except queue.Full:
                if self.cancel.is_set():
                    if release is not None:
                        release()
                    raise CancelledError("cancelled by the user") from None

    def drain(self) -> None:
        """Wait until every job queued so far has run; raises the threads' error."""
        if any(t.is_alive() for t in self.threads):
            self.jobs.join()
        self._raise()

    def stop(self) -> None:
        """End the threads (jobs still queued after an error or a cancel are skipped)."""
        alive = [t for t in self.threads if t.is_alive()]
        if not alive:
            return
        with self.lock:
            if self.error is None:
                self.error = _StoppedError()
        for _ in alive:
            while True:
                try:
                    self.jobs.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue
        for thread in alive:
            thread.join()

    def _raise(self) -> None:
        if self.error is not None and not isinstance(self.error, _StoppedError):
            raise self.error
        if self.cancel.is_set():
            raise CancelledError("cancelled by the user")


class _StoppedError(Exception):
    """Marks a writer that was stopped on purpose (nothing to report)."""
