"""Restore from an image stream (docs/format.md §10) as it arrives: stdin, a pipe, a stream file.

The safety order is a directory restore's (restore/directory.py): the areas that hold partition
tables are wiped first, the partitions' data follows, the partition table comes last. The stream
forces one difference: its raw areas (boot code, partition tables, the post-MBR gap, EBRs, the
backup GPT) arrive in disk order, so the area at offset 0 comes first. Raw areas are small (a few
MiB), so their data is held in memory until every partition is written and the END record has
confirmed that the whole stream arrived intact; then they are written from the end of the disk
backwards. More than ``MAX_HELD`` bytes of raw-area data is refused (convert the stream into a
directory image first): the restore stops with the target plainly incomplete, its old table gone.

Partitions are written as their records arrive: FRAMEs (already decoded and hash-checked by the
reader) are written, ZERO runs zeroed, UNREADABLE runs zeroed and reported, and a REF is copied
from where its FRAME was written, read back and hash-checked. A worker thread writes while the
caller's thread reads and decodes the next records (bounded queue: a few chunks in flight).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import IO

import xxhash

from clonebay.engine.restore.directory import (
    Placement,
    RestoreOptions,
    finish_restore,
    grown_placements,
    incomplete_note,
    needed_size,
    plan_restore,
    refuse_mounted,
    single_partition,
    wipe_tables,
)
from clonebay.engine.restore.grow import growth_plan
from clonebay.engine.verify import PlacedRecords, VerifyError, verify_records
from clonebay.errors import CancelledError, ClonebayError, DeviceError
from clonebay.imaging import stream
from clonebay.imaging.codec import Buffer
from clonebay.imaging.spec import ImageError
from clonebay.imaging.stream_read import StreamChunk, StreamEnd, StreamReader
from clonebay.model import Progress
from clonebay.system.blockdev import TargetDevice, is_block_device

MAX_HELD = 64 << 20  # raw-area data held until the partitions are written; real ones hold ~2 MiB
WRITE_QUEUE = 6  # chunks decoded ahead of the writer thread (at most ~6 x 4 MiB in memory)


def restore_stream(
    source: IO[bytes],
    target: str,
    options: RestoreOptions | None = None,
    *,
    name: str = "stream",
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Restore the stream ``source`` onto ``target``; returns warnings, like ``restore``."""
    cancel = cancel or threading.Event()
    options = options or RestoreOptions()
    reader = StreamReader(source, name)  # header and MANIFEST: nothing written yet
    manifest = reader.manifest
    region = options.region or single_partition(manifest)
    needed = needed_size(manifest, region)
    if is_block_device(target):
        refuse_mounted(target)
    with TargetDevice(target, size=needed) as dev:
        placements = plan_restore(manifest, dev.size, region)
        grown = growth_plan(manifest, dev.size, options.grow) if region is None else None
        if grown is not None:  # raw areas other than the head are left out: a new table follows
            placements = grown_placements(placements, grown)
        apply = _Apply(reader, dev, placements, whole_disk=region is None)
        try:
            end = apply.run(progress, cancel)
        except ClonebayError as exc:
            exc.message += incomplete_note(target, region)
            raise
        dev.sync()
        if options.verify:  # against the stream's INDEX records, before any fixup
            placed = [
                PlacedRecords(p.region.name, p.target_offset, end.records[p.region.name])
                for p in placements
            ]
            problems = verify_records(target, placed, progress=progress, cancel=cancel)
            if problems:
                raise VerifyError(
                    f"verification of {target} failed: {len(problems)} chunk(s) differ from the"
                    f" stream; first: {problems[0]}"
                )
        return apply.warnings + finish_restore(target, dev, manifest, grown, region)


class _Apply:
    """Applies a stream's records to the target in the order safety needs."""

    def __init__(
        self,
        reader: StreamReader,
        dev: TargetDevice,
        placements: list[Placement],
        *,
        whole_disk: bool,
    ) -> None:
        self.reader = reader
        self.dev = dev
        self.whole_disk = whole_disk
        position = {r.name: i for i, r in enumerate(reader.regions)}
        self.places = {position[p.region.name]: p for p in placements}
        self.order = [position[p.region.name] for p in placements]  # areas last, offset 0 last
        self.raw_areas = {
            i for i, p in self.places.items() if whole_disk and p.region.kind == "raw-area"
        }
        self.held: dict[int, list[tuple[StreamChunk, Buffer | None]]] = {
            i: [] for i in self.raw_areas
        }
        self.held_frames: dict[tuple[int, int], Buffer] = {}
        self.held_bytes = 0
        self.warnings: list[str] = []
        self.total = sum(p.region.used_bytes for p in placements)
        self.done = 0

    def run(
        self, progress: Callable[[Progress], None] | None, cancel: threading.Event
    ) -> StreamEnd:
        if self.whole_disk:
            wipe_tables(self.dev)
        writer = _Writer(self.dev, cancel)
        started = last = time.monotonic()
        end: StreamEnd | None = None
        region = ""
        try:
            for event in self.reader.events():
                if cancel.is_set():
                    raise CancelledError("restore cancelled")
                if isinstance(event, StreamEnd):
                    end = event
                    break
                if event.region not in self.places:
                    continue  # another region than the one being restored
                region = event.name
                data = self._data(event, writer)
                if event.region in self.held:
                    self._hold(event, data)
                else:
                    self._put(writer, event, data)
                self.done += event.length
                now = time.monotonic()
                if progress and now - last > 0.5:
                    last = now
                    rate = self.done / max(now - started, 1e-6)
                    eta = (self.total - self.done) / rate if rate else None
                    progress(Progress(event.name, self.done, self.total, rate, eta, "write"))
            writer.drain()
        finally:
            writer.stop()
        assert end is not None  # events() ends with StreamEnd or raises
        for number in self.order:  # the raw areas, from the end of the disk backwards
            for event, data in self.held.get(number, []):
                self._apply(event, data)
        if progress:
            rate = self.done / max(time.monotonic() - started, 1e-6)
            progress(Progress(region, self.done, self.total, rate, 0.0, "write"))
        return end

    def _data(self, event: StreamChunk, writer: _Writer) -> Buffer | None:
        """The bytes a FRAME or REF puts on the target (None for ZERO / UNREADABLE)."""
        if event.kind == stream.REC_FRAME:
            return event.data
        if event.kind != stream.REC_REF or event.source is None:
            return None
        src_region, src_offset = event.source
        held = self.held_frames.get(event.source)
        if held is not None:
            return held
        place = self.places.get(src_region)
        where = f"region {event.name} offset {event.offset} repeats region"
        where += f" {self.reader.regions[src_region].name} offset {src_offset}"
        if place is None:
            raise ImageError(
                f"{self.reader.name}: {where}, which is not being restored. Restore the whole"
                " stream, or convert it into a directory image first (clonebay convert) and"
                " restore the region from that"
            )
        writer.drain()  # the earlier frame must be on the target before it is read back
        at = place.target_offset + src_offset
        data = _pread(self.dev, event.length, at)
        if xxhash.xxh3_128_digest(data) != event.record.digest:
            raise DeviceError(
                f"{self.dev.path}: {where}, but reading it back at byte {at} gave other bytes"
                " than were written (is the target failing?)"
            )
        return data

    def _hold(self, event: StreamChunk, data: Buffer | None) -> None:
        if data is not None:
            self.held_bytes += len(data)
            if event.kind == stream.REC_FRAME:
                self.held_frames[(event.region, event.offset)] = data
        if self.held_bytes > MAX_HELD:
            raise ImageError(
                f"{self.reader.name}: more than {MAX_HELD >> 20} MiB of data outside the"
                f" partitions (region {event.name}): a restore from a stream holds it in memory"
                " until the partitions are written. Convert the stream into a directory image"
                " (clonebay convert) and restore from that"
            )
        self.held[event.region].append((event, data))

    def _put(self, writer: _Writer, event: StreamChunk, data: Buffer | None) -> None:
        writer.put(lambda: self._apply(event, data))

    def _apply(self, event: StreamChunk, data: Buffer | None) -> None:
        at = self.places[event.region].target_offset + event.offset
        if data is not None:
            self.dev.write_at(memoryview(data), at)
            return
        self.dev.zero(at, event.length)
        if event.kind == stream.REC_UNREADABLE:
            self.warnings.append(
                f"region {event.name}: {event.length} bytes at offset {event.offset} were"
                " unreadable on the source and are zeros on the target"
            )


class _Writer:
    """One thread that runs the writes, in order, while the caller reads the next records."""

    def __init__(self, dev: TargetDevice, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(WRITE_QUEUE)
        self.error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="clonebay-write", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                if self.error is None and not self.stopping:
                    job()
            except BaseException as exc:  # forwarded to the caller at its next put
                self.error = exc
            finally:
                self.jobs.task_done()

    def put(self, job: Callable[[], None]) -> None:
        self._raise()
        while True:
            try:
                self.jobs.put(job, timeout=0.2)
                return
            except queue.Full:
                if self.cancel.is_set():
                    raise CancelledError("restore cancelled") from None
                self._raise()

    def drain(self) -> None:
        """Wait until every write so far is done."""
        self.jobs.join()
        self._raise()

    def stop(self) -> None:
        """End the thread; writes still queued (after an error or a cancel) are skipped."""
        self.stopping = True
        self.jobs.put(None)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _pread(dev: TargetDevice, length: int, offset: int) -> bytes:
    parts, got = [], 0
    while got < length:
        try:
            piece = os.pread(dev.fd, length - got, offset + got)
        except OSError as exc:
            raise DeviceError(f"read error on {dev.path} at byte {offset + got}: {exc}") from exc
        if not piece:
            raise DeviceError(f"{dev.path}: short read at byte {offset + got}")
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)
