"""The target path's one writer thread: writes run in the order they were queued, while the
caller reads, decodes or receives the next data.

The queue is bounded (a few chunks in flight), so memory stays small and a slow target slows the
feeder down rather than filling RAM. The first exception in the thread is kept and raised in the
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
    """Runs queued jobs one after the other in a thread of its own."""

    def __init__(self, cancel: threading.Event, depth: int = QUEUE_DEPTH) -> None:
        self.cancel = cancel
        self.jobs: queue.Queue[_Job | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="clonebay-write", daemon=True)
        self.thread.start()

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
                self.error = exc
            finally:
                self.jobs.task_done()

    def put(self, job: Callable[[], None], release: Callable[[], None] | None = None) -> None:
        """Queue ``job`` (``release`` is called after it ran or was skipped); raises the
        thread's error, or CancelledError on cancel (then ``release`` is called at once)."""
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
