"""The copy pipeline: reads in flight, transform workers, and an in-order sink.

    tasks --(buffers from a fixed pool)--> thread pool (read + compress/hash) --> sink (caller)

A dispatcher thread takes a page-aligned buffer from a fixed pool for each task (no fresh 4 MiB
bytes object per chunk: that costs a page-fault pass per chunk) and submits "read it, then
transform it" to a pool of ``workers + readers`` threads, putting each future into a bounded
queue in task order. So ``readers`` reads are in flight while ``workers`` chunks are hashed or
compressed: with direct I/O (system/directio.py) one 4 MiB read at a time leaves the disk idle
between requests (545 MB/s here against 783-811 MB/s with two to four in flight). The caller's
thread takes futures from that queue in order and gives each result to the sink, so output order
equals input order without any sorting, and memory in flight is bounded by the pool size. A
buffer returns to the pool once the sink is done with the chunk (a disk-to-disk sink writes
straight from it, or keeps it until its target writer threads have written it).

Exceptions in a read or a worker reach the caller when it takes that chunk; the cancel Event
stops every stage within one chunk. At the end, the bytes each region sent through the sink must
equal its planned total (the count check). Progress reports bytes done/total per region, MB/s,
ETA, and which stage was busiest (read, transform or write): the bottleneck a technician can act
on.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from clonebay.errors import CancelledError, DeviceError
from clonebay.model import Progress
from clonebay.system.blockdev import ByteSource
from clonebay.system.directio import DirectFile, pread_all

T = TypeVar("T")

RescueRead = Callable[[memoryview, int], tuple[tuple[int, int], ...]]  # engine/rescue/reader.py

CHUNK = 4 << 20  # 4 MiB: large enough for sequential speed, small enough to dedup well
READERS = 2  # reads in flight: 2 and 4 measured alike here, 1 lost 30 % (see the docstring)


@dataclass(frozen=True)
class ReadTask:
    """Read ``length`` bytes at ``source_offset`` of ``fd``: chunk ``offset`` of ``region``.
    ``fd`` is a DirectFile (direct I/O where allowed) or a plain descriptor."""

    region: str
    offset: int
    fd: DirectFile | int | ByteSource  # a ByteSource: a decrypted view (engine/decrypted.py)
    source_offset: int
    length: int


class Lease:
    """Who still uses a pool buffer: the pipeline until the sink returns, and every holder the
    sink added (a target writer thread that writes the chunk later). The buffer goes back to the
    pool when the last one lets go, never earlier: a buffer reused while a target still writes
    from it would put the next chunk's bytes on that target."""

    def __init__(self, pool: BufferPool, buf: mmap.mmap) -> None:
        self.pool = pool
        self.buf = buf
        self.count = 1
        self.lock = threading.Lock()

    def hold(self) -> Callable[[], None]:
        """One more holder; call the returned function exactly once when done with the data."""
        with self.lock:
            self.count += 1
        return self.release

    def release(self) -> None:
        with self.lock:
            self.count -= 1
            last = self.count == 0
        if last:
            self.pool.put(self.buf)


@dataclass
class Chunk:
    """A chunk in flight. ``data`` is a view of a pool buffer, valid until the sink returns, or
    for as long as the sink holds it: ``keep()`` gives a release function to call when done."""

    region: str
    offset: int
    data: memoryview
    source_offset: int
    lease: Lease | None = None
    missing: tuple[tuple[int, int], ...] = ()  # a rescue's unread parts: (offset, length), zeroed

    def keep(self) -> Callable[[], None]:
        """Keep the data valid after the sink returns (a writer thread writes it later)."""
        if self.lease is None:
            raise RuntimeError("this chunk's buffer is not leased")
        return self.lease.hold()


class BufferPool:
    """A fixed set of page-aligned buffers (anonymous mmaps), handed out and returned."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self.count = count
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(count):
            self._free.put(mmap.mmap(-1, size))

    def get(self, cancel: threading.Event) -> mmap.mmap:
        while True:
            try:
                return self._free.get(timeout=0.2)
            except queue.Empty:
                if cancel.is_set():
                    raise CancelledError("cancelled") from None

    def put(self, buf: mmap.mmap) -> None:
        self._free.put(buf)


@dataclass
class StageClock:
    """Seconds each stage spent working (not waiting), to name the bottleneck."""

    read: float = 0.0
    transform: float = 0.0
    write: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_transform(self, seconds: float) -> None:
        with self.lock:
            self.transform += seconds

    def add_read(self, seconds: float) -> None:
        with self.lock:
            self.read += seconds

    def bottleneck(self, workers: int, readers: int = 1) -> str:
        stages = {
            "read": self.read / readers,
            "transform": self.transform / workers,
            "write": self.write,
        }
        return max(stages, key=lambda k: stages[k])


class ProgressMeter:
    """Turns bytes done into Progress events, at most every ``interval`` seconds."""

    def __init__(
        self,
        totals: dict[str, int],
        report: Callable[[Progress], None] | None,
        interval: float = 0.5,
    ) -> None:
        self.totals = totals
        self.done = dict.fromkeys(totals, 0)
        self.report = report
        self.interval = interval
        self.started = time.monotonic()
        self.last = 0.0

    def add(self, region: str, n: int, bottleneck: str, final: bool = False) -> None:
        self.done[region] = self.done.get(region, 0) + n
        now = time.monotonic()
        if self.report is None or (not final and now - self.last < self.interval):
            return
        self.last = now
        done, total = sum(self.done.values()), sum(self.totals.values())
        rate = done / max(now - self.started, 1e-6)
        eta = (total - done) / rate if rate > 0 else None
        self.report(
            Progress(region, self.done[region], self.totals.get(region, 0), rate, eta, bottleneck)
        )


class Pipeline(Generic[T]):
    """Run reads through ``transform`` (in ``workers`` threads) into ``sink`` (in order)."""

    def __init__(
        self,
        transform: Callable[[Chunk], T],
        sink: Callable[[Chunk, T], None],
        *,
        workers: int = 2,
        readers: int = READERS,
        buffers: int = 8,
        chunk_size: int = CHUNK,
        cancel: threading.Event | None = None,
        progress: Callable[[Progress], None] | None = None,
        rescue: RescueRead | None = None,
    ) -> None:
        self.transform = transform
        self.rescue = rescue
        self.sink = sink
        self.workers = workers
        self.readers = max(1, readers)
        self.pool = BufferPool(max(buffers, workers + self.readers + 2), chunk_size)
        self.cancel = cancel or threading.Event()
        self.progress = progress
        self.clock = StageClock()

    def _read_and_work(self, task: ReadTask, buf: mmap.mmap) -> tuple[Chunk, T]:
        chunk = self._read(task, buf)
        started = time.perf_counter()
        try:
            return chunk, self.transform(chunk)
        finally:
            self.clock.add_transform(time.perf_counter() - started)

    def _read(self, task: ReadTask, buf: mmap.mmap) -> Chunk:
        view = memoryview(buf)[: task.length]
        started = time.perf_counter()
        if self.cancel.is_set():
            raise CancelledError("cancelled")
        if self.rescue is not None:  # a failed read is mapped and zeroed, not an error
            missing = self.rescue(view, task.source_offset)
            self.clock.add_read(time.perf_counter() - started)
            lease = Lease(self.pool, buf)
            return Chunk(task.region, task.offset, view, task.source_offset, lease, missing)
        try:
            if isinstance(task.fd, DirectFile):
                got = task.fd.read_into(view, task.source_offset)
            elif isinstance(task.fd, int):
                got = pread_all(task.fd, view, task.source_offset)
            else:
                data = task.fd.pread(task.length, task.source_offset)
                view[: len(data)] = data
                got = len(data)
        except OSError as exc:
            at = task.offset + _first_bad(task)
            raise DeviceError(
                f"read error in {task.region} at offset {at}: {exc.strerror}"
            ) from exc
        if got < task.length:
            raise DeviceError(
                f"unexpected end of source in {task.region} at offset {task.offset + got}"
            )
        self.clock.add_read(time.perf_counter() - started)
        return Chunk(task.region, task.offset, view, task.source_offset, Lease(self.pool, buf))

    def _reader(
        self,
        tasks: Iterable[ReadTask],
        executor: ThreadPoolExecutor,
        out: queue.Queue[tuple[mmap.mmap, Future[tuple[Chunk, T]]] | BaseException | None],
    ) -> None:
        try:
            for task in tasks:
                if task.length > self.pool.size:
                    raise ValueError(f"read of {task.length} bytes exceeds the chunk size")
                buf = self.pool.get(self.cancel)
                future = executor.submit(self._read_and_work, task, buf)
                self._put(out, (buf, future))
            self._put(out, None)
        except BaseException as exc:  # forwarded to the caller's thread
            self._put(out, exc)

    def _put(self, out: queue.Queue[Any], item: object) -> None:
        """Put ``item`` unless the job was cancelled (then nobody is taking items any more)."""
        while not self.cancel.is_set():
            try:
                out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def run(self, tasks: Iterable[ReadTask], totals: dict[str, int]) -> None:
        """Copy every task through transform and sink; raises the first error of any stage."""
        meter = ProgressMeter(totals, self.progress)
        out: queue.Queue[tuple[mmap.mmap, Future[tuple[Chunk, T]]] | BaseException | None]
        out = queue.Queue(maxsize=self.pool.count)
        threads = self.workers + self.readers
        with ThreadPoolExecutor(threads, thread_name_prefix="clonebay-work") as executor:
            reader = threading.Thread(
                target=self._reader, args=(tasks, executor, out), name="clonebay-read", daemon=True
            )
            reader.start()
            try:
                for buf, future in self._drain(out):
                    chunk, result = future.result()
                    started = time.perf_counter()
                    self.sink(chunk, result)
                    self.clock.write += time.perf_counter() - started
                    length = chunk.data.nbytes
                    assert chunk.lease is not None and chunk.lease.buf is buf
                    chunk.lease.release()
                    meter.add(chunk.region, length, self._neck())
                meter.add(next(iter(totals), ""), 0, self._neck(), final=True)
                _count_check(totals, meter.done)
            except BaseException:
                self.cancel.set()
                raise
            finally:
                reader.join()

    def _neck(self) -> str:
        return self.clock.bottleneck(self.workers, self.readers)

    def _drain(
        self, out: queue.Queue[tuple[mmap.mmap, Future[tuple[Chunk, T]]] | BaseException | None]
    ) -> Iterator[tuple[mmap.mmap, Future[tuple[Chunk, T]]]]:
        while True:
            if self.cancel.is_set():
                raise CancelledError("cancelled by the user")
            try:
                item = out.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _first_bad(task: ReadTask, piece: int = 4096) -> int:
    """Where in ``task`` the first unreadable piece is (a failed transfer of 4 MiB says only
    that some sector in it failed): read again ``piece`` bytes at a time, at most 1,024 reads.
    The task's length when every piece reads now (a transient error)."""
    if not isinstance(task.fd, DirectFile | int):
        return 0  # a view: its source's error is the one to show
    fd = task.fd.fd if isinstance(task.fd, DirectFile) else task.fd
    for pos in range(0, task.length, piece):
        try:
            os.pread(fd, min(piece, task.length - pos), task.source_offset + pos)
        except OSError:
            return pos
    return task.length


def _count_check(planned: dict[str, int], done: dict[str, int]) -> None:
    """Every region's bytes through the sink must equal what was planned (as bmaptool checks
    its block count): a chunk never scheduled or read twice is an error, never a warning."""
    wrong = [
        f"{region}: {want} bytes planned, {done.get(region, 0)} copied"
        for region, want in planned.items()
        if done.get(region, 0) != want
    ]
    extra = [
        f"{region}: {n} bytes not planned"
        for region, n in done.items()
        if region not in planned and n
    ]
    if wrong or extra:
        raise DeviceError("count check failed: " + "; ".join((wrong + extra)[:5]))
