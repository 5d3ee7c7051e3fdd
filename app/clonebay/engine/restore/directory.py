"""Restore from an image directory: a disk, a disk image file, or one partition.

This module only reads: the image is opened and checked (structure on open; then, before the
first write, every frame the restore will use is decoded and hash-checked, as Clonezilla checks
an image's restorability, unless the user says ``--no-check``), its records are decoded a few
ahead in worker threads (LZ4 releases the GIL), and each goes to the one target path
(engine/target/), which keeps the safe order: wipe, data, tables last, flush, verify, fixups,
count check. Zero records are written as zeros (or holes) unless the target is a new sparse file;
bytes no record covers (free space) are not written at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

from clonebay.engine.restore.placements import (
    Placement,
    RestoreOptions,
    needed_size,
    plan_target,
    single_partition,
    unreadable_note,
)
from clonebay.engine.target import TargetPath
from clonebay.imaging.codec import Buffer
from clonebay.imaging.frame_stream import region_frames
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import FLAG_UNREADABLE, ImageError, Record
from clonebay.model import Progress
from clonebay.system.blockdev import is_block_device
from clonebay.system.run import run

__all__ = ["RestoreOptions", "check_frames", "needed_size", "restore", "single_partition"]


def _decoded(
    reader: ImageReader, placements: list[Placement], workers: int, cancel: threading.Event
) -> Iterator[tuple[Placement, Record, Future[Buffer] | None]]:
    """(placement, record, future of its bytes) in write order: the packs read sequentially and
    decoded on ``workers`` threads ahead of the writer (imaging/frame_stream.py), never through
    the reader's browsing cache. None for ZERO and UNREADABLE records."""
    place_of = {place.region.name: place for place in placements}
    plan = [(name, reader.records(name)) for name in place_of]
    for name, rec, fut in region_frames(reader, plan, workers=workers, cancel=cancel):
        yield place_of[name], rec, fut


def check_frames(
    reader: ImageReader,
    image: str,
    progress: Callable[[Progress], None] | None = None,
) -> None:
    """Decode and hash-check every frame of the image before anything is written; ImageError
    (nothing written) naming the first damaged frame. Progress comes as region "check"."""
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        if progress:
            rate = done / max(time.monotonic() - started, 1e-6)
            eta = (total - done) / rate if rate else None
            progress(Progress("check", done, total, rate, eta, "check"))

    found = reader.verify(report)
    if found.problems:
        raise ImageError(
            f"{image} is damaged: {len(found.problems)} problem(s) found by the check before"
            f" writing; first: {found.problems[0]}. Nothing was written. (--no-check skips this"
            " check; the restore would then stop at the damaged frame, leaving the target"
            " incomplete)"
        )


def restore(
    image: str,
    target: str,
    options: RestoreOptions | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Restore ``image`` onto ``target``; returns warnings and what was done after the data."""
    cancel = cancel or threading.Event()
    options = options or RestoreOptions()
    with ImageReader(image) as reader:
        manifest = reader.manifest
        plan = plan_target(
            "restore",
            manifest,
            target,
            options,
            lambda entry: sum(r.length for r in reader.records(entry.name)),
        )
        job, placements = plan.job, plan.placements
        warnings: list[str] = []
        path = TargetPath(job, progress=progress, cancel=cancel)
        with path, path.writing():
            if options.check:
                check_frames(reader, image, progress)
            path.begin()
            for place, rec, fut in _decoded(reader, placements, options.workers, cancel):
                name = place.region.name
                at = place.target_offset + rec.offset
                held = job.whole_disk and place.region.kind == "raw-area"
                if fut is None and rec.flags & FLAG_UNREADABLE:
                    warnings.append(unreadable_note(name, rec.offset, rec.length))
                if held:
                    path.hold(name, at, None if fut is None else fut.result(), rec.length)
                elif fut is None:
                    path.put_zero(name, at, rec.length)
                else:
                    path.put(name, at, fut.result(), rec.digest)
            result = path.finish()
    if is_block_device(target):
        run(["blockdev", "--rereadpt", target], check=False)
    return warnings + result.warnings + list(job.notes) + result.done
