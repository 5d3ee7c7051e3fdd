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

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import replace

from clonebay.engine.restore import shrinking
from clonebay.engine.restore.placements import (
    Placement,
    RestoreOptions,
    RestorePlan,
    needed_size,
    plan_restore,
    plan_target,
    single_partition,
    unreadable_note,
)
from clonebay.engine.target import TargetPath
from clonebay.engine.target.fanout import (
    FanOut,
    StateSink,
    TargetOutcome,
    open_paths,
)
from clonebay.imaging.codec import Buffer
from clonebay.imaging.frame_stream import region_frames
from clonebay.imaging.manifest import RegionEntry
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import FLAG_UNREADABLE, ImageError, Record
from clonebay.model import Progress
from clonebay.system.blockdev import is_block_device
from clonebay.system.run import run

__all__ = [
    "RestoreOptions",
    "check_frames",
    "needed_size",
    "restore",
    "restore_many",
    "single_partition",
]


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
    """Restore ``image`` onto ``target``; returns warnings and what was done after the data,
    or raises what stopped it (saying the target is incomplete once anything was written)."""
    (outcome,) = restore_many(image, [target], options, progress=progress, cancel=cancel)
    if outcome.error is not None:
        raise outcome.error
    return outcome.warnings + outcome.done


def restore_many(
    image: str,
    targets: Sequence[str],
    options: RestoreOptions | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    on_state: StateSink | None = None,
) -> list[TargetOutcome]:
    """Restore ``image`` onto every target from one read and one decode of each record
    (target/fanout.py): each target has its own plan (its size, its growth), its own checks,
    verify and fixups, and its own outcome, in order. Any refusal raises before anything is
    written, as does a damaged frame found by the check; after that a target that fails is
    recorded and the others go on."""
    cancel = cancel or threading.Event()
    options = options or RestoreOptions()
    with ImageReader(image) as reader:
        manifest = reader.manifest

        def covered(entry: RegionEntry) -> int:
            return sum(r.length for r in reader.records(entry.name))

        minimums = shrinking.measurer(image, manifest, options.scratch)
        plans = [
            plan_target("restore", manifest, t, options, covered, minimums=minimums)
            for t in targets
        ]
        if options.check and any(p.grown and p.grown.shrinks for p in plans):
            check_frames(reader, image, progress)  # before the views read the image
            options = replace(options, check=False)
        with shrinking.views(image, reader, plans, options) as (plans, shrunk):
            paths = open_paths([p.job for p in plans], progress=progress, cancel=cancel)
            with FanOut(paths, on_state) as fan:
                if options.check:
                    check_frames(reader, image, progress)
                warnings: list[str] = []
                fan.run(
                    lambda: _feed(
                        fan,
                        reader,
                        plans,
                        options.workers,
                        cancel=cancel,
                        warnings=warnings,
                        shrunk=shrunk,
                    )
                )
                outcomes = fan.outcomes(lambda p: p.job.notes)
                for outcome in outcomes:
                    outcome.done[:0] = [r.done for r in shrunk.values()]
    for outcome in outcomes:
        outcome.warnings = warnings + outcome.warnings
        if outcome.touched and is_block_device(outcome.target):
            run(["blockdev", "--rereadpt", outcome.target], check=False)
    return outcomes


def _feed(
    fan: FanOut,
    reader: ImageReader,
    plans: list[RestorePlan],
    workers: int,
    *,
    cancel: threading.Event,
    warnings: list[str],
    shrunk: dict[str, shrinking.ShrunkRegion],
) -> None:
    """Each record, decoded once, to every target that places its region (a grown layout
    leaves out the old table's raw areas). The bytes object is shared: it is immutable. Of a
    shrunk region, only the records' pieces that the resized volume uses and the resizer did
    not change; then what it changed, from its overlay."""
    places = {p.job.target: {pl.region.name: pl for pl in p.placements} for p in plans}
    manifest = reader.manifest
    every = plan_restore(manifest, needed_size(manifest, plans[0].region), plans[0].region)
    used = {name for per in places.values() for name in per}
    order = [p for p in every if p.region.name in used]
    for place, rec, fut in _decoded(reader, order, workers, cancel):
        name = place.region.name
        if fut is None and rec.flags & FLAG_UNREADABLE:
            warnings.append(unreadable_note(name, rec.offset, rec.length))
        data = None if fut is None else fut.result()  # an image error stops every target
        if name in shrunk:
            for piece, part in shrunk[name].from_record(rec, data):
                fan.each(functools.partial(_put, places, name, piece, part))
            continue
        fan.each(functools.partial(_put, places, name, rec, data))
    for name, region in shrunk.items():
        for piece, part in region.from_overlay():
            fan.each(functools.partial(_put, places, name, piece, part))


def _put(
    places: dict[str, dict[str, Placement]],
    name: str,
    rec: Record,
    data: Buffer | None,
    path: TargetPath,
) -> None:
    """One record onto one target, where that target's plan places its region."""
    mine = places[path.job.target].get(name)
    if mine is None:
        return
    at = mine.target_offset + rec.offset
    if path.job.whole_disk and mine.region.kind == "raw-area":
        path.hold(name, at, data, rec.length)
    elif data is None:
        path.put_zero(name, at, rec.length)
    else:
        path.put(name, at, data, rec.digest)
