"""Multicast jobs: send an image to many machines at once, and receive one onto a target.

``send`` offers an image's frames to a net/ session (engine/multicast/catalog.py says what is
sent); ``receive`` joins a session and restores frames *as they arrive, in any order*, through
the same steps as a restore (engine/restore/directory.py): the Plan (placements, target size), the
guards (a mounted target or the live medium is refused before anything is written), the safety
order (old partition tables wiped before the first data, the raw areas that hold the new table
held in memory and written last, from the end of the disk backwards, after every partition's
data), fsync, optional verify against the catalog's records, then the restore's fixups (the
GPT backup moved to the end of a larger target, the kernel told about the new table; with
``grow`` on a larger target, partitions at the grown layout's places, then the new table and
grown filesystems, as engine/restore/directory.py does).

Every frame is decoded and checked against its xxh3-128 before it is written; a frame that
fails its hash stops the receive (its datagrams were authentic, so the sender's image is bad).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence

from clonebay.engine.layout.plan import Plan
from clonebay.engine.multicast.catalog import Catalog, ImageObjects, parse_catalog
from clonebay.engine.multicast.disk_source import DiskObjects
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
from clonebay.engine.restore.stream import MAX_HELD
from clonebay.engine.verify import PlacedRecords, VerifyError, verify_records
from clonebay.errors import CancelledError, ClonebayError, UsageError
from clonebay.imaging.codec import Buffer, DecodeError, decode_payload
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import FLAG_UNREADABLE, ImageError
from clonebay.imaging.stream_convert import is_stream_file
from clonebay.model import Progress
from clonebay.net.receiver import ReceiveConfig, Receiver, ReceiveStatus
from clonebay.net.sender import SendConfig, Sender, SessionStatus
from clonebay.system.blockdev import TargetDevice, is_block_device

WRITE_QUEUE = 16  # complete frames waiting for the writer (at most ~64 MiB at 4 MiB chunks)
WRITE_BEHIND = 16 << 20  # bytes written between two starts of writeback (TargetDevice)

__all__ = ["MulticastRestore", "ReceiveConfig", "SendConfig", "receive", "send"]


def send(
    source: str,
    config: SendConfig,
    *,
    status: Callable[[SessionStatus], None] | None = None,
    start: threading.Event | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> SessionStatus:
    """Send ``source``, an image directory or a disk (read live: multicast/disk_source.py), to
    every receiver that joins; returns the session's final status with every receiver's
    outcome. ``progress`` reports the disk's mapping pass."""
    if os.path.isdir(source):
        with ImageReader(source) as reader:
            return Sender(config, ImageObjects(reader), status).run(start, cancel)
    if os.path.isfile(source) and is_stream_file(source):
        raise UsageError(
            f"{source} is an image stream: convert it into an image directory first"
            " (clonebay convert), or send it over TCP with --to"
        )
    disk = DiskObjects(source, progress)
    try:
        return Sender(config, disk, status).run(start, cancel)
    finally:
        disk.close()


def receive(
    target: str,
    config: ReceiveConfig,
    options: RestoreOptions | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    status: Callable[[ReceiveStatus], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[list[str], ReceiveStatus]:
    """Join a session and restore what it carries onto ``target`` (a disk or a disk image
    file, created when absent); returns the restore's warnings and the receiver's counters."""
    sink = MulticastRestore(target, options or RestoreOptions(), progress, cancel)

    def on_status(s: ReceiveStatus) -> None:
        sink.report(s)
        if status is not None:
            status(s)

    try:
        final = Receiver(config, on_status).run(sink, cancel)
    finally:
        sink.close()
    return sink.warnings, final


class MulticastRestore:
    """The receiver's sink: places frames on the target in whatever order they complete."""

    def __init__(
        self,
        target: str,
        options: RestoreOptions,
        progress: Callable[[Progress], None] | None,
        cancel: threading.Event | None,
    ) -> None:
        self.target = target
        self.options = options
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.dev: TargetDevice | None = None
        self.catalog: Catalog | None = None
        self.placements: list[Placement] = []
        self.grown: Plan | None = None  # the layout grown onto a larger target (--grow)
        self.region: str | None = None
        self.warnings: list[str] = []
        # object -> where it goes: (target offset, region name, region offset, held?)
        self.places: list[list[tuple[int, str, int, bool]]] = []
        self.held: dict[int, Buffer] = {}
        self.held_bytes = 0
        self.jobs: queue.Queue[tuple[int, bytearray] | None] = queue.Queue(WRITE_QUEUE)
        self.error: BaseException | None = None
        self.writer: threading.Thread | None = None
        self.started = time.monotonic()
        self.last_progress = 0.0

    def prepare(self, catalog: bytes, sizes: Sequence[int]) -> None:
        """Plan the restore and open the target; refusals happen here, before any write."""
        cat = parse_catalog(catalog, list(sizes))
        self.catalog = cat
        manifest = cat.manifest
        self.region = self.options.region or single_partition(manifest)
        if is_block_device(self.target):
            refuse_mounted(self.target)
        needed = needed_size(manifest, self.region)
        # the disk works while frames arrive, so the final fsync is short
        self.dev = TargetDevice(self.target, size=needed, write_behind=WRITE_BEHIND)
        self.placements = plan_restore(manifest, self.dev.size, self.region)
        if self.region is None:
            self.grown = growth_plan(manifest, self.dev.size, self.options.grow)
        if self.grown is not None:  # of the raw areas only the head: a new table follows
            self.placements = grown_placements(self.placements, self.grown)
        self.places = [[] for _ in cat.objects]
        for place in self.placements:
            held = self.region is None and place.region.kind == "raw-area"
            name = place.region.name
            for rec, number in zip(cat.records[name], cat.uses[name], strict=True):
                if number >= 0:
                    self.places[number].append(
                        (place.target_offset + rec.offset, name, rec.offset, held)
                    )
        self.writer = threading.Thread(target=self._write_loop, name="clonebay-write", daemon=True)
        self.writer.start()

    def put(self, number: int, body: bytearray) -> None:
        """Queue a complete frame for the writer thread (blocks while the queue is full: the
        socket buffer takes up the slack, and the sender slows down if it overflows)."""
        while True:
            self._raise()
            try:
                self.jobs.put((number, body), timeout=0.2)
                return
            except queue.Full:
                if self.cancel.is_set():
                    raise CancelledError("receive cancelled") from None

    def finish(self) -> list[str]:
        """After the last frame: the raw areas (partition table last), fsync, verify, fixups."""
        assert self.dev is not None and self.catalog is not None and self.writer is not None
        self.jobs.put(None)
        self.writer.join()
        self._raise()
        dev, manifest = self.dev, self.catalog.manifest
        try:
            for place in self.placements:  # areas come last, from the end backwards
                self._write_held(place)
            dev.sync()
        except ClonebayError as exc:
            exc.message += incomplete_note(self.target, self.region)
            raise
        if self.options.verify:
            placed = [
                PlacedRecords(p.region.name, p.target_offset, self.catalog.records[p.region.name])
                for p in self.placements
            ]
            problems = verify_records(self.target, placed, progress=self.progress)
            if problems:
                raise VerifyError(
                    f"verification of {self.target} failed: {len(problems)} chunk(s) differ from"
                    f" the image; first: {problems[0]}"
                )
        self.warnings += finish_restore(self.target, dev, manifest, self.grown, self.region)
        return self.warnings

    def close(self) -> None:
        if self.writer is not None and self.writer.is_alive():
            self.error = self.error or CancelledError("receive stopped")
            with contextlib.suppress(queue.Full):
                self.jobs.put_nowait(None)
            self.writer.join(timeout=10)
        if self.dev is not None:
            self.dev.close()

    def report(self, status: ReceiveStatus) -> None:
        """Receiver status -> a restore Progress event (at most twice a second)."""
        now = time.monotonic()
        if self.progress is None or (now - self.last_progress < 0.5 and status.state != "ok"):
            return
        self.last_progress = now
        rate = status.done / max(now - self.started, 1e-6)
        eta = (status.total - status.done) / rate if rate else None
        self.progress(Progress("multicast", status.done, status.total, rate, eta, status.state))

    # -- the writer thread -----------------------------------------------------------------

    def _write_loop(self) -> None:
        first = True
        while (job := self.jobs.get()) is not None:
            if self.error is not None:
                continue
            try:
                if first:
                    self._begin()
                    first = False
                self._write(*job)
            except BaseException as exc:  # forwarded to the receive loop at its next put
                self.error = exc

    def _begin(self) -> None:
        """Before the first frame: wipe the old tables, then zero ZERO / UNREADABLE runs."""
        assert self.dev is not None and self.catalog is not None
        if self.region is None:
            wipe_tables(self.dev)
        for place in self.placements:
            for rec in self.catalog.records[place.region.name]:
                if not rec.flags:
                    continue
                if self.region is None and place.region.kind == "raw-area":
                    continue  # written with the held data at the end
                self.dev.zero(place.target_offset + rec.offset, rec.length)
                self._note_unreadable(place.region.name, rec.offset, rec.length, rec.flags)

    def _write(self, number: int, body: bytearray) -> None:
        assert self.dev is not None and self.catalog is not None
        info = self.catalog.objects[number]
        try:
            data = decode_payload(info.codec, body, info.raw_length, info.digest)
        except DecodeError as exc:
            where = self.places[number][0][1:3] if self.places[number] else ("?", 0)
            raise ImageError(
                f"frame of region {where[0]} offset {where[1]} from the sender: {exc}"
            ) from None
        for at, region, _, held in self.places[number]:
            if not held:
                self.dev.write_at(memoryview(data), at)
            elif number not in self.held:
                self.held[number] = data
                self.held_bytes += len(data)
                if self.held_bytes > MAX_HELD:
                    raise ImageError(
                        f"more than {MAX_HELD >> 20} MiB of data outside the partitions (region"
                        f" {region}): a receiver holds it in memory until the partitions are"
                        " written. Restore this image from a directory instead"
                    )

    def _write_held(self, place: Placement) -> None:
        assert self.dev is not None and self.catalog is not None
        if self.region is not None or place.region.kind != "raw-area":
            return
        name = place.region.name
        for rec, number in zip(self.catalog.records[name], self.catalog.uses[name], strict=True):
            at = place.target_offset + rec.offset
            if number >= 0:
                self.dev.write_at(memoryview(self.held[number]), at)
            else:
                self.dev.zero(at, rec.length)
                self._note_unreadable(name, rec.offset, rec.length, rec.flags)

    def _note_unreadable(self, region: str, offset: int, length: int, flags: int) -> None:
        if flags & FLAG_UNREADABLE:
            self.warnings.append(
                f"region {region}: {length} bytes at offset {offset} were unreadable on the"
                " source and are zeros on the target"
            )

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
