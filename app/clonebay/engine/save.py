"""The save job: a disk (or one partition) -> an image directory, or an image stream.

Probe the source, turn it into regions (engine/regions.py), then run every chunk of every region
through the pipeline: the reader thread reads used extents in chunk-aligned pieces, the workers
LZ4-compress and xxh3-hash them (codec.encode_chunk, which releases the GIL), and the writer,
in this thread, appends frames to packs in order. The manifest is written last: a cancelled or
failed save leaves an image that says it is incomplete. A stream (docs/format.md §10) gets the
same frames as records on a binary file object (stdout, a pipe); it lists the regions first and
ends with an END record, which a failed save never writes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from clonebay.engine.decrypted import check_rescue, decrypted_views
from clonebay.engine.inspect import DiskReport, inspect_disk
from clonebay.engine.locked import check_keys, volumes_of
from clonebay.engine.pipeline import Chunk, Pipeline, ReadTask
from clonebay.engine.regions import SourceRegion, source_regions, table_as_data
from clonebay.engine.rescue.reader import RescueOptions, Rescuer
from clonebay.engine.rescue.save import (
    passes_into_image,
    rescue_map_path,
    resume_passes,
    save_rescuer,
)
from clonebay.engine.resume.checkpoints import CHECKPOINT_EVERY
from clonebay.engine.resume.identity import disk_record, fingerprint, opened_by_key
from clonebay.engine.resume.save import (
    check_resumable,
    remaining_domain,
    remaining_tasks,
    remaining_totals,
    resume_point,
    saved_domain,
)
from clonebay.engine.shrink import steps
from clonebay.engine.shrink.compact import Compacted, smallest_plan
from clonebay.engine.stores.space import check_room
from clonebay.errors import ClonebayError, StoreFullError, UsageError
from clonebay.fs import extents
from clonebay.fs.keyring import Keyring
from clonebay.imaging import checkpoint, spec
from clonebay.imaging.codec import EncodedChunk, encode_chunk
from clonebay.imaging.imagedir import remove_incomplete
from clonebay.imaging.manifest import Manifest, RegionEntry
from clonebay.imaging.regionlog import entry_fields, region_entry
from clonebay.imaging.source_disk import SourceInfo, TableInfo
from clonebay.imaging.spec import DEFAULT_CHUNK_SIZE, DEFAULT_PACK_LIMIT
from clonebay.imaging.stream_write import StreamWriter
from clonebay.imaging.writer import ImageWriter
from clonebay.model import Progress
from clonebay.system.blockdev import ByteSource, SourceDevice, sector_sizes
from clonebay.system.directio import DirectFile
from clonebay.units import human_size


@dataclass(frozen=True)
class SaveOptions:
    partition: int | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    pack_limit: int = DEFAULT_PACK_LIMIT
    codec: str = "lz4"
    workers: int = max(1, min(4, os.cpu_count() or 1))
    overwrite: bool = False
    space_check: bool = False  # refuse when the folder's free space < the data in use
    shrink: bool = False  # save the smallest disk that holds the data (engine/shrink/compact.py)
    scratch: str = ""  # where a shrink keeps its copy-on-write overlays
    rescue: RescueOptions | None = None  # read a failing source (engine/rescue/), map beside
    resume: bool = False  # go on with the interrupted save into the image (engine/resume/)
    checkpoint_every: float = CHECKPOINT_EVERY  # seconds between two (engine/resume/)
    keys: Keyring | None = None  # secrets for locked volumes (fs/keyring.py)


def chunk_tasks(
    regions: list[SourceRegion],
    fd: DirectFile | int,
    chunk: int,
    views: dict[str, ByteSource] | None = None,
) -> Iterator[ReadTask]:
    """Read tasks for every run of every region, cut at chunk-aligned boundaries; a decrypted
    region's from its plaintext view (engine/decrypted.py)."""
    for region in regions:
        view = (views or {}).get(region.name)
        for piece in extents.split(region.runs, chunk):
            if view is not None:
                yield ReadTask(region.name, piece.start, view, piece.start, piece.length)
            else:
                at = region.disk_offset + piece.start
                yield ReadTask(region.name, piece.start, fd, at, piece.length)


def _source_info(path: str, size: int, fd: int, partition: int | None) -> SourceInfo:
    from clonebay.system.udev import find_disk

    logical, physical = sector_sizes(fd)
    info = SourceInfo(path, size, logical, physical, partition=partition)
    disk = find_disk(path)
    if disk is not None:
        info = replace(
            info, model=disk.model, serial=disk.serial, wwn=disk.wwn, transport=disk.transport
        )
    return info


def region_entries(regions: list[SourceRegion]) -> list[RegionEntry]:
    """The manifest entries of ``regions`` before any data (what a stream declares up front)."""
    entries = []
    for region in regions:
        vol = region.volume
        entries.append(
            region_entry(
                region.name,
                region.kind,
                region.disk_offset,
                region.size,
                copy=region.copy,
                fstype=vol.fstype if vol else "",
                label=vol.label if vol else "",
                uuid=vol.uuid if vol else "",
                state=vol.state.value if vol else "",
                used_bytes=region.used_bytes,
                reason=vol.reason if vol else "raw area outside partitions",
                notes=vol.notes if vol else (),
                partition=region.number or None,
            )
        )
    return entries


class _RegionSink:
    """Feeds pipeline results to the writer, opening and closing regions in disk order; a
    rescue's unread chunks become UNREADABLE records, and the map learns what was written."""

    def __init__(
        self,
        writer: ImageWriter | StreamWriter,
        entries: list[RegionEntry],
        rescuer: Rescuer | None = None,
        checkpoints: tuple[dict[str, object], float] | None = None,
    ) -> None:
        self.writer = writer
        self.pending = list(entries)
        self.current: str | None = None
        self.rescuer = rescuer
        self.checkpoints = checkpoints  # (the job's record, seconds between two)
        self.last = time.monotonic()
        point = writer.resumed if isinstance(writer, ImageWriter) else None
        if point is not None:  # regions closed before the checkpoint, and the one it left open
            done = {e.name for e in point.regions}
            self.current = point.open.entry.name if point.open else None
            self.pending = [e for e in entries if e.name not in done and e.name != self.current]

    def advance_to(self, name: str | None) -> None:
        """Close the open region and open every region up to ``name`` (all when None)."""
        while self.current != name:
            if self.current is not None:
                self.writer.end_region()
                self.current = None
            if not self.pending:
                return
            entry = self.pending.pop(0)
            self.writer.begin_region(**entry_fields(entry))
            self.current = entry.name

    def __call__(self, chunk: Chunk, encoded: EncodedChunk) -> None:
        if chunk.region != self.current:
            self.advance_to(chunk.region)
        if chunk.missing:  # pass 1 of a rescue: a chunk is read whole or not at all
            self.writer.add_unreadable(chunk.offset, chunk.data.nbytes)
        else:
            self.writer.add_encoded(chunk.offset, chunk.data.nbytes, encoded)
        if self.rescuer is not None:
            self.rescuer.delivered(chunk.source_offset, chunk.data.nbytes, chunk.missing)
        if self.checkpoints is not None and isinstance(self.writer, ImageWriter):
            job, every = self.checkpoints
            if time.monotonic() - self.last >= every:
                self.writer.checkpoint(job)
                self.last = time.monotonic()


def save(
    source: str,
    image: str | IO[bytes],
    options: SaveOptions = SaveOptions(),
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> Manifest:
    """Save ``source`` into the image directory ``image``, or as a stream into the binary file
    object ``image`` (stdout, a pipe, a socket file); returns the manifest written."""
    _check_options(options)
    if options.rescue is not None and not isinstance(image, str):
        raise UsageError(
            "save --rescue writes an image directory: its later passes add what they read to"
            " the image, which a stream cannot take; save into a folder"
        )
    if options.rescue is not None and options.shrink:  # before the shrink reads the source
        raise UsageError("save --rescue cannot shrink: save the failing disk first, then shrink")
    point = None
    if options.resume:
        point, options = resume_point(image, options)
        if point is None:  # pass 1 was complete: the rescue's later passes remain
            assert isinstance(image, str)
            return resume_passes(source, image, options, cancel or threading.Event())
        with SourceDevice(source) as src:  # the same disk? (before reading its filesystems)
            check_resumable(point, None, src, None)
    report = inspect_disk(source, options.keys)
    check_keys(report, options.keys)
    check_rescue(volumes_of(report), options.rescue is not None)
    with _compacted(report, options) as compacted:
        if compacted is not None:
            report = compacted.report
            regions = compacted.regions
        else:
            regions = source_regions(report, options.partition)
        entries = region_entries(regions)
        if options.space_check and isinstance(image, str) and point is None:
            check_room(image, sum(r.used_bytes for r in regions))
        seen = _Seen(progress)
        cancel = cancel or threading.Event()
        with SourceDevice(source) as src, contextlib.ExitStack() as stack:
            job = _job_record(src, image, regions, options)
            if point is not None:
                check_resumable(point, job, src, regions)
            parts = [(r.name, r.disk_offset, r.size, r.volume) for r in regions]
            views = stack.enter_context(decrypted_views(source, parts, options.keys))
            rescuer = save_rescuer(src, image, options, cancel)
            if rescuer is not None:
                stack.callback(rescuer.close)
            if rescuer is not None and point is not None:  # the image, not the map, tells
                rescuer.settle(saved_domain(regions, point))  # what is saved: read the rest
                rescuer.forget(remaining_domain(regions, point))
            with _open_writer(image, options) as writer, _told(image, writer, seen):
                tasks = (
                    compacted.tasks(src.io, options.chunk_size)
                    if compacted is not None
                    else chunk_tasks(regions, src.io, options.chunk_size, views)
                )
                manifest = _save_into(
                    writer,
                    src,
                    report=report,
                    regions=regions,
                    entries=entries,
                    options=options,
                    progress=seen,
                    cancel=cancel,
                    tasks=remaining_tasks(tasks, point) if point is not None else tasks,
                    totals=remaining_totals(regions, point),
                    compacted=compacted,
                    rescuer=rescuer,
                    job=job if isinstance(image, str) and compacted is None else None,
                )
            if rescuer is None:
                return manifest
            assert isinstance(image, str) and options.rescue is not None
            return passes_into_image(rescuer, image, regions, options.rescue.retries) or manifest


def _job_record(
    src: SourceDevice, image: str | IO[bytes], regions: list[SourceRegion], options: SaveOptions
) -> dict[str, object]:
    """What a checkpoint keeps of the job: the source, what it reads, where the map is."""
    rescue = options.rescue
    return {
        "kind": "save",
        "source": disk_record(src.path, src.size),
        "partition": options.partition,
        "fingerprint": fingerprint(
            (r.name, r.disk_offset, r.size, ((e.start, e.length) for e in r.runs)) for r in regions
        ),
        "opened": opened_by_key((r.name, r.volume) for r in regions),
        "rescue_map": (
            str(rescue_map_path(image, rescue)) if rescue and isinstance(image, str) else ""
        ),
    }


@contextlib.contextmanager
def _compacted(report: DiskReport, options: SaveOptions) -> Iterator[Compacted | None]:
    """The compact disk of ``save --shrink`` (None without it, or when nothing can shrink)."""
    if not options.shrink:
        yield None
        return
    if options.partition is not None:
        raise UsageError("save --shrink saves a whole disk, not one partition")
    plan = smallest_plan(report, options.scratch)
    if plan is None:
        yield None
        return
    steps.check_room(plan, options.scratch)
    compacted = Compacted(report, plan, options.scratch)
    try:
        yield compacted
    finally:
        compacted.close()


@contextlib.contextmanager
def _told(
    image: str | IO[bytes], writer: ImageWriter | StreamWriter, seen: _Seen
) -> Iterator[None]:
    """A failed save's message says what became of the image (removed, or incomplete)."""
    try:
        yield
    except StoreFullError as exc:
        exc.message = _store_full(exc.message, image, writer, seen)
        raise
    except ClonebayError as exc:
        where = image if isinstance(image, str) else "the stream"
        exc.message += (
            f"\nthe save stopped: {where} is incomplete (it has no manifest.json): "
            + (
                "run the same save with --resume to go on from its last checkpoint, or"
                " delete it and save again"
                if checkpoint.exists(Path(image))
                else "delete it and save again"
            )
            if isinstance(image, str)
            else f"\nthe save stopped: {where} is incomplete (it has no END record)"
        )
        raise


def _store_full(
    said: str, image: str | IO[bytes], writer: ImageWriter | StreamWriter, seen: _Seen
) -> str:
    """The store-full message: how far the save got, and what became of the partial image."""
    done = f"{human_size(seen.done)} of {human_size(seen.total)} of data" if seen.total else ""
    head = f"the store is full{': ' + done + ' saved' if done else ''} ({said})"
    if isinstance(image, str):
        writer.abort()
        gone = remove_incomplete(Path(image))
        fate = (
            f"the incomplete image {image} was removed"
            if gone
            else f"{image} is incomplete (it has no manifest.json): delete it"
        )
    else:
        fate = "the stream is incomplete (it has no END record)"
    return f"{head}\nthe save stopped: {fate}; the source was not written"


class _Seen:
    """The last progress a save reported (for the store-full message), passed on."""

    def __init__(self, progress: Callable[[Progress], None] | None) -> None:
        self.progress = progress
        self.done = self.total = 0
        self.regions: dict[str, tuple[int, int]] = {}

    def __call__(self, event: Progress) -> None:
        self.regions[event.region] = (event.done, event.total)
        self.done = sum(d for d, _ in self.regions.values())
        self.total = sum(t for _, t in self.regions.values())
        if self.progress is not None:
            self.progress(event)


def _check_options(options: SaveOptions) -> None:
    smallest = spec.PACK_HEADER.size + spec.FRAME_HEADER.size + options.chunk_size
    if not smallest <= options.pack_limit <= spec.MAX_PACK_SIZE:
        raise UsageError(
            f"a pack limit of {options.pack_limit} bytes is outside what a pack can hold"
            f" ({smallest} bytes to 4 GiB - 1)"
        )


def _save_into(
    writer: ImageWriter | StreamWriter,
    src: SourceDevice,
    *,
    report: DiskReport,
    regions: list[SourceRegion],
    entries: list[RegionEntry],
    options: SaveOptions,
    progress: Callable[[Progress], None] | None,
    cancel: threading.Event | None,
    tasks: Iterator[ReadTask],
    totals: dict[str, int],
    compacted: Compacted | None,
    rescuer: Rescuer | None,
    job: dict[str, object] | None,
) -> Manifest:
    codec = options.codec
    table = table_as_data(report) if options.partition is None else TableInfo()
    info = _source_info(src.path, src.size, src.fd, options.partition)
    warnings = report.warnings
    if compacted is not None:  # the image holds the compact disk
        info = replace(info, size=compacted.plan.target_size)
        warnings = (*warnings, *compacted.notes)
    writer.declare(entries, source=info, table=table)
    every = (job, options.checkpoint_every) if job is not None else None
    sink = _RegionSink(writer, entries, rescuer, every)
    pipe: Pipeline[EncodedChunk] = Pipeline(
        lambda c: encode_chunk(c.data, codec),
        sink,
        workers=options.workers,
        buffers=options.workers * 2 + 2,
        chunk_size=options.chunk_size,
        cancel=cancel,
        progress=progress,
        rescue=rescuer.read if rescuer is not None else None,
    )
    pipe.run(tasks, totals)
    sink.advance_to(None)
    return writer.finish(source=info, table=table, warnings=warnings)


def _open_writer(image: str | IO[bytes], options: SaveOptions) -> ImageWriter | StreamWriter:
    if isinstance(image, str) and options.resume:
        return ImageWriter.resume(image)
    if isinstance(image, str):
        return ImageWriter(
            image,
            chunk_size=options.chunk_size,
            pack_limit=options.pack_limit,
            codec=options.codec,
            overwrite=options.overwrite,
        )
    return StreamWriter(
        image,
        chunk_size=options.chunk_size,
        pack_limit=options.pack_limit,
        codec=options.codec,
        name=str(getattr(image, "name", "stream")),
    )
