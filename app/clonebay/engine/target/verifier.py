"""Read-back verify that overlaps the copy.

Every run the target path writes (a chunk, a zeroed run, a held table area) is recorded with its
xxh3-128 (or as zeros). Runs are grouped in windows of VERIFY_WINDOW bytes; when a window is
full, a thread of its own flushes the target (the runs reach stable storage, not just the
drive's queue) and reads the window back from the medium while later chunks are still being
copied: with direct I/O the read cannot come from the page cache; a target the kernel writes
buffered (it refused O_DIRECT) has the window's pages dropped after the flush first. So verify
costs the last window and the reads the disk can fit beside the writes, not a second pass over
the whole target. A window is read at least 128 MiB behind the writes, so a spinning disk seeks
once per 128 MiB, not per chunk.

A run that reads back wrong is kept and named in a VerifyError when the job finishes; the per
region counts of bytes read back feed the count check (engine/target/path.py). Verified runs are
dropped, so memory does not grow with the size of the disk.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import xxhash

from clonebay.errors import CancelledError, VerifyError
from clonebay.model import Progress
from clonebay.system.blockdev import TargetDevice

VERIFY_WINDOW = 128 << 20  # bytes written before a window is read back
ZERO_DIGEST = b""  # marks a zeroed run (it must read back as zeros)


@dataclass(frozen=True)
class Written:
    """A run put on the target, for the read-back: its xxh3-128, or zeros."""

    region: str  # "" for a run outside every region (a truncated source's zeroed tail)
    offset: int
    length: int
    digest: bytes  # ZERO_DIGEST: the run must read back as zeros


class Verifier:
    """Collects written runs and reads them back, a window at a time, in a thread."""

    def __init__(
        self,
        dev: TargetDevice,
        cancel: threading.Event,
        progress: Callable[[Progress], None] | None = None,
        window: int = VERIFY_WINDOW,
    ) -> None:
        self.dev = dev
        self.cancel = cancel
        self.progress = progress
        self.window_size = window
        self.lock = threading.Lock()
        self.window: list[Written] = []
        self.window_bytes = 0
        self.written_bytes = 0
        self.verified: dict[str, int] = {}
        self.verified_bytes = 0
        self.chunks = 0
        self.bad: list[Written] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.windows: queue.Queue[list[Written] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="clonebay-verify", daemon=True)
        self.thread.start()

    def add(self, run: Written) -> None:
        """A run that is written (its write call returned); any thread."""
        with self.lock:
            self.window.append(run)
            self.window_bytes += run.length
            self.written_bytes += run.length
            if self.window_bytes < self.window_size:
                return
            full, self.window, self.window_bytes = self.window, [], 0
        self.windows.put(full)

    def finish(self) -> tuple[dict[str, int], int]:
        """Read back what is left (call after the last write and a flush); VerifyError names
        the first run that differs. Returns bytes read back per region and the chunks checked."""
        with self.lock:
            last, self.window, self.window_bytes = self.window, [], 0
        self.windows.put(last)
        self.windows.put(None)
        started = time.monotonic()
        base = self.verified_bytes
        while self.thread.is_alive():
            self.thread.join(0.5)
            self._report(started, base)
        if self.error is not None:
            raise self.error
        if self.bad:
            first = self.bad[0]
            raise VerifyError(
                f"verification of {self.dev.path} failed: {len(self.bad)} chunk(s) read back"
                f" differ from what was written; first: region {first.region or '-'} at target"
                f" byte {first.offset} ({first.length} bytes): the target is unreliable"
            )
        return dict(self.verified), self.chunks

    def stop(self) -> None:
        """End the thread without finishing (the job failed or was cancelled)."""
        if self.thread.is_alive():
            self.stopping.set()
            self.windows.put(None)
            self.thread.join()

    def _report(self, started: float, base: int) -> None:
        if self.progress is None:
            return
        done, total = self.verified_bytes, self.written_bytes
        rate = (done - base) / max(time.monotonic() - started, 1e-6)
        eta = (total - done) / rate if rate > 0 else None
        self.progress(Progress("verify", done, total, rate, eta, "read"))

    def _loop(self) -> None:
        try:
            while True:
                runs = self.windows.get()
                if runs is None or self.stopping.is_set():
                    return
                self._check_window(runs)
        except BaseException as exc:  # reaches the caller in finish()
            self.error = exc

    def _check_window(self, runs: list[Written]) -> None:
        if not runs:
            return
        self.dev.sync()
        if not self.dev.io.direct:  # buffered: the medium, not the pages just written
            start = min(r.offset for r in runs)
            end = max(r.offset + r.length for r in runs)
            self.dev.drop_range(start, end - start)
        for run in runs:
            if self.cancel.is_set() or self.stopping.is_set():
                raise CancelledError("cancelled while verifying the target")
            if not self._reads_back(run):
                self.bad.append(run)
            elif run.region:
                self.verified[run.region] = self.verified.get(run.region, 0) + run.length
                self.chunks += 1
            self.verified_bytes += run.length

    def _reads_back(self, run: Written) -> bool:
        data = self.dev.read(run.length, run.offset)
        if run.digest == ZERO_DIGEST:
            return data.count(0) == len(data)
        return xxhash.xxh3_128_digest(data) == run.digest
