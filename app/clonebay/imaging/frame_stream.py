"""Frames for a restore or a full check: large sequential reads of the packs, decoding on every
core, results in the order asked for.

``ImageReader.read_at`` serves random reads (browsing, FUSE): a lookup per call, one pread per
frame and a small cache of decoded frames behind a lock. A restore, and the check before it,
know every frame they need before they start, so they plan their reads instead. Frames that lie
one after the other in a pack (the usual case: a writer appends them region by region in offset
order, docs/format.md §3) are read with one pread of up to READ_SIZE bytes and sliced into
frames, and the reads ahead are announced to the kernel (POSIX_FADV_WILLNEED) so that the disk
works while we decode. Frames in any other order are read where they are: a dedup record that
points back at an earlier frame, an edited image whose new frames sit in later packs (§11), a
region restored alone. Sequential is the fast case, not the only one.

One reader thread reads and slices; a pool of decoder threads checks each frame
(imaging/frame_check.py, the checks ImageReader makes) and decodes it (LZ4 and xxh3 release the
GIL). The caller gets one Future per frame, in the order of its list; a Future's result is the
frame's bytes, its exception the frame's ImageError. The queue between reader and caller holds
at most 2 x workers frames, each holding at most its read buffer (READ_SIZE, or one frame when a
frame is larger): memory stays bounded whatever the image's size. An unexpected error in the
reader thread reaches the caller as the exception of the next Future; a cancel stops the reader
before its next read and the caller within a frame.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from clonebay.errors import CancelledError
from clonebay.imaging import spec
from clonebay.imaging.codec import Buffer
from clonebay.imaging.frame_check import decode_frame, frame_at
from clonebay.imaging.spec import ImageError, Record

if TYPE_CHECKING:  # the reader's verify uses this module
    from clonebay.imaging.reader import ImageReader

READ_SIZE = 16 << 20  # bytes per pread: 3 stored 4 MiB frames, or a dozen compressed ones
READ_GAP = 1 << 20  # a gap up to this between wanted frames is read through, not a new read
READAHEAD = 64 << 20  # announced to the kernel ahead of the read position (WILLNEED)
OPEN_PACKS = 16  # pack descriptors the reader keeps open (packs are up to 4 GiB each)
POLL = 0.1  # seconds between looks at the cancel Event while waiting on the queue

RegionFrame = tuple[str, Record]  # (region name, a record with a frame)


@dataclass(frozen=True)
class PackRead:
    """One pread: ``length`` bytes at ``start`` of pack ``pack``, holding frames ``first`` ..
    ``first + len(cuts) - 1`` of the stream's list; ``cuts``: where each starts in the bytes."""

    pack: int
    start: int
    length: int
    first: int
    cuts: tuple[int, ...]


@dataclass
class StreamStats:
    """What a stream cost: preads issued, bytes they returned, frames handed to the decoders."""

    reads: int = 0
    bytes_read: int = 0
    frames: int = 0


def plan_reads(
    frames: Sequence[Record], read_size: int = READ_SIZE, gap: int = READ_GAP
) -> list[PackRead]:
    """Group the frames, in their order, into reads: a frame joins the read before it when it
    lies in the same pack at most ``gap`` bytes after it (or inside it: a frame used twice) and
    the read stays within ``read_size`` bytes; otherwise it starts a new read."""
    reads: list[PackRead] = []
    pack = start = end = first = 0
    cuts: list[int] = []
    for i, rec in enumerate(frames):
        frame_start = rec.pack_offset
        frame_end = frame_start + spec.FRAME_HEADER.size + rec.stored_length
        joins = (
            cuts
            and rec.pack == pack
            and start <= frame_start <= end + gap
            and max(end, frame_end) - start <= read_size
        )
        if not joins:
            if cuts:
                reads.append(PackRead(pack, start, end - start, first, tuple(cuts)))
            pack, start, end, first, cuts = rec.pack, frame_start, frame_end, i, []
        cuts.append(frame_start - start)
        end = max(end, frame_end)
    if cuts:
        reads.append(PackRead(pack, start, end - start, first, tuple(cuts)))
    return reads


class _PackFiles:
    """The reader thread's own pack descriptors (its own readahead state), opened on demand."""

    def __init__(self, paths: Sequence[str], stats: StreamStats) -> None:
        self.paths = paths
        self.stats = stats
        self._fds: collections.OrderedDict[int, int] = collections.OrderedDict()

    def _fd(self, pack: int) -> int:
        fd = self._fds.get(pack)
        if fd is None:
            fd = os.open(self.paths[pack], os.O_RDONLY | os.O_CLOEXEC)
            self._fds[pack] = fd
            with contextlib.suppress(OSError):  # advice only: a filesystem may refuse it
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while len(self._fds) > OPEN_PACKS:
                os.close(self._fds.popitem(last=False)[1])
        self._fds.move_to_end(pack)
        return fd

    def announce(self, read: PackRead) -> None:
        """Ask the kernel to start reading ``read`` into the page cache now."""
        with contextlib.suppress(OSError):
            os.posix_fadvise(self._fd(read.pack), read.start, read.length, os.POSIX_FADV_WILLNEED)

    def read(self, read: PackRead) -> bytes:
        """The bytes of ``read`` (fewer at the end of a pack that shrank since it was opened)."""
        fd = self._fd(read.pack)
        data = os.pread(fd, read.length, read.start)
        self.stats.reads += 1
        while 0 < len(data) < read.length:
            more = os.pread(fd, read.length - len(data), read.start + len(data))
            self.stats.reads += 1
            if not more:
                break
            data += more
        self.stats.bytes_read += len(data)
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class FrameStream:
    """Futures of the checked, decoded bytes of ``frames`` (region, record), in that order.

    Iterate once; leave early with ``close`` (or a ``with`` block), which stops both threads.
    """

    def __init__(
        self,
        pack_paths: Sequence[str],
        frames: Sequence[RegionFrame],
        *,
        workers: int | None = None,
        cancel: threading.Event | None = None,
        read_size: int = READ_SIZE,
        readahead: int = READAHEAD,
    ) -> None:
        self.paths = list(pack_paths)
        self.frames = frames
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.cancel = cancel or threading.Event()
        self.readahead = readahead
        self.reads = plan_reads([rec for _, rec in frames], read_size)
        self.stats = StreamStats()
        self._ready: queue.Queue[Future[Buffer]] = queue.Queue(2 * self.workers)
        self._stop = threading.Event()
        self._started = False
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def __iter__(self) -> Iterator[Future[Buffer]]:
        if self._started:
            raise RuntimeError("a FrameStream is read once")
        self._started = True
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clonebay-decode")
        self._thread = threading.Thread(
            target=self._read_all, args=(self._pool,), name="clonebay-packs", daemon=True
        )
        self._thread.start()
        finished = False
        try:
            for _ in self.frames:
                yield self._next(self._thread)
            finished = True
        finally:
            self.close(drop_pending=not finished)

    def _next(self, thread: threading.Thread) -> Future[Buffer]:
        while True:
            if self.cancel.is_set():
                raise CancelledError("cancelled by the user")
            try:
                return self._ready.get(timeout=POLL)
            except queue.Empty:
                if not thread.is_alive() and self._ready.empty():
                    raise RuntimeError("the pack reader stopped early") from None

    def _read_all(self, pool: ThreadPoolExecutor) -> None:
        """The reader thread: every planned read, announced ahead, sliced, sent to decode."""
        packs = _PackFiles(self.paths, self.stats)
        announced = ahead = 0  # reads announced so far; their bytes not yet read
        try:
            for read in self.reads:
                if self._stop.is_set() or self.cancel.is_set():
                    return
                while announced < len(self.reads) and (ahead < self.readahead or not ahead):
                    packs.announce(self.reads[announced])
                    ahead += self.reads[announced].length
                    announced += 1
                try:
                    data = packs.read(read)
                except OSError as exc:
                    if not self._fail_all(read, exc):
                        return
                    continue
                finally:
                    ahead -= read.length
                view = memoryview(data)
                for k, cut in enumerate(read.cuts):
                    name, rec = self.frames[read.first + k]
                    at = frame_at(self.paths[rec.pack], name, rec)
                    piece = view[cut : cut + spec.FRAME_HEADER.size + rec.stored_length]
                    self.stats.frames += 1
                    if not self._put(pool.submit(decode_frame, piece, rec, at)):
                        return
        except BaseException as exc:  # reaches the caller as the next frame's error
            self._put(_failed(exc))
        finally:
            packs.close()

    def _fail_all(self, read: PackRead, exc: OSError) -> bool:
        """A read failed: each of its frames gets the error read_at would have given."""
        for k in range(len(read.cuts)):
            name, rec = self.frames[read.first + k]
            at = frame_at(self.paths[rec.pack], name, rec)
            error = ImageError(f"{at}: read failed ({exc.strerror or exc})")
            if not self._put(_failed(error)):
                return False
        return True

    def _put(self, future: Future[Buffer]) -> bool:
        """Queue ``future`` for the caller; False when the stream was closed or cancelled."""
        while not (self._stop.is_set() or self.cancel.is_set()):
            try:
                self._ready.put(future, timeout=POLL)
                return True
            except queue.Full:
                continue
        future.cancel()
        return False

    def close(self, *, drop_pending: bool = True) -> None:
        """Stop the reader and the decoders. Futures not decoded yet are cancelled, unless every
        frame was handed out (the caller may still hold them): then they are waited for."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=drop_pending)

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def region_frames(
    reader: ImageReader,
    plan: Sequence[tuple[str, Sequence[Record]]],
    *,
    workers: int | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[tuple[str, Record, Future[Buffer] | None]]:
    """(region, record, Future of its bytes) for every record of ``plan`` (region name, the
    records a restore writes), in that order; None for ZERO and UNREADABLE records. Never uses
    the reader's decoded-frame cache or its counters."""
    cancel = cancel or threading.Event()
    wanted = [(name, rec) for name, records in plan for rec in records if not rec.flags]
    paths = [reader.pack_path(n) for n in range(len(reader.manifest.packs))]
    with FrameStream(paths, wanted, workers=workers, cancel=cancel) as stream:
        futures = iter(stream)
        for name, records in plan:
            for rec in records:
                if cancel.is_set():
                    raise CancelledError("cancelled by the user")
                yield name, rec, None if rec.flags else next(futures)
        next(futures, None)  # none left: the stream ends as finished, keeping the caller's futures


def _failed(exc: BaseException) -> Future[Buffer]:
    future: Future[Buffer] = Future()
    future.set_exception(exc)
    return future
