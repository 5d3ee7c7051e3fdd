"""Restoring a directory image onto a smaller disk: its volumes shrunk in views of the image.

The layout comes from engine/layout/shrink.py, with each candidate's minimum measured by its
filesystem's tool in a copy-on-write view whose base is the image's region (random access
through the index: engine/shrink/). Before the target is opened, every shrunk region is resized
in its own view; then the restore feeds, for a shrunk region, only the pieces of the image's
records that the resized volume uses and the resizer left alone, and after the records, what
the resizer changed, read from the overlay. The count check's plan for the region is exactly
those bytes. Streams cannot do this (they are read once, in order): restore/grow.py refuses.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import xxhash

from clonebay.engine.layout.plan import Plan
from clonebay.engine.restore.grow import Minimums, region_volume
from clonebay.engine.restore.placements import RestoreOptions, RestorePlan, with_layout
from clonebay.engine.shrink import steps
from clonebay.engine.shrink.view import Base
from clonebay.errors import UsageError
from clonebay.fs import extents
from clonebay.imaging.codec import Buffer
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import Record
from clonebay.model import Extent

CHUNK = 4 << 20


def measurer(image: str, manifest: Manifest, scratch: str) -> Minimums:
    """Measure partitions' minimums in views of ``image`` (each at most once)."""
    cache: dict[int, int] = {}

    def measure(numbers: tuple[int, ...]) -> dict[int, int]:
        wanted = {}
        for number in numbers:
            if number in cache:
                continue
            region = manifest.region(f"p{number}")
            base = Base(region.size, image=image, region=region.name)
            wanted[number] = (base, region_volume(region))
        cache.update(steps.minimums(wanted, scratch))
        return {n: cache[n] for n in numbers if n in cache}

    return measure


@dataclass
class ShrunkRegion:
    """A resized region: the pieces the records supply, and those its overlay supplies."""

    from_records: tuple[Extent, ...]
    from_changes: tuple[Extent, ...]
    overlay: int  # fd of the overlay file
    done: str = ""  # what the shrink did, for the result

    @property
    def planned(self) -> int:
        return sum(e.length for e in self.from_records) + sum(e.length for e in self.from_changes)

    def from_record(
        self, rec: Record, data: Buffer | None
    ) -> Iterator[tuple[Record, Buffer | None]]:
        """The parts of ``rec`` the restore writes (zeros stay zeros: ``data`` None)."""
        for piece in extents.intersect((Extent(rec.offset, rec.length),), self.from_records):
            if data is None:
                yield rec._replace(offset=piece.start, length=piece.length), None
                continue
            part = memoryview(data)[piece.start - rec.offset : piece.end - rec.offset]
            digest = xxhash.xxh3_128_digest(part)
            yield rec._replace(offset=piece.start, length=piece.length, digest=digest), part

    def from_overlay(self) -> Iterator[tuple[Record, bytes]]:
        for piece in extents.split(self.from_changes, CHUNK):
            data = os.pread(self.overlay, piece.length, piece.start)
            if len(data) != piece.length:
                data += bytes(piece.length - len(data))  # a hole at the overlay's end
            digest = xxhash.xxh3_128_digest(data)
            yield Record(piece.start, piece.length, 0, 0, piece.length, 0, 0, digest), data


def _with_recorded_use(layout: Plan, reader: ImageReader) -> Plan:
    """``layout`` with each shrunk volume's used extents as the image's records cover them
    (a manifest's volume carries no extents), for the scratch estimate."""
    moves = []
    for move in layout.moves:
        if not move.shrunk or move.volume is None:
            moves.append(move)
            continue
        used = extents.normalize(Extent(r.offset, r.length) for r in reader.records(move.name))
        moves.append(replace(move, volume=replace(move.volume, used=used)))
    return replace(layout, moves=tuple(moves))


@contextlib.contextmanager
def views(
    image: str, reader: ImageReader, plans: Sequence[RestorePlan], options: RestoreOptions
) -> Iterator[tuple[list[RestorePlan], dict[str, ShrunkRegion]]]:
    """The plans with their shrunk regions resized (nothing to do when none shrinks), and
    what the feed needs for each; the views are removed afterwards."""
    layout = plans[0].grown
    if layout is None or not layout.shrinks:
        yield list(plans), {}
        return
    if any(p.grown != layout for p in plans):
        raise UsageError(
            "the targets need different layouts and at least one must be shrunk: restore onto"
            " smaller disks of different sizes one at a time; nothing was written"
        )
    steps.check_room(_with_recorded_use(layout, reader), options.scratch)
    shrunk = steps.shrink_all(
        layout, lambda m: Base(m.source.size, image=image, region=m.name), options.scratch
    )
    fds: list[int] = []
    try:
        regions: dict[str, ShrunkRegion] = {}
        sizes = {m.name: m.target_size for m in shrunk.plan.moves}
        for name, view in shrunk.views.items():
            used = extents.clip(view.volume.used, sizes[name])  # an NTFS backup boot sector
            # lies just past the volume's size
            recorded = extents.normalize(Extent(r.offset, r.length) for r in reader.records(name))
            changed = view.changes.ranges
            fds.append(steps.open_overlay(view))
            regions[name] = ShrunkRegion(
                extents.subtract(extents.intersect(used, recorded), changed),
                extents.intersect(used, changed),
                fds[-1],
                next(d for d in shrunk.done if d.startswith(f"{name}:")),
            )
        planned = {name: r.planned for name, r in regions.items()}
        manifest = reader.manifest
        out = [
            with_layout(
                p, "restore", manifest, p.job.target, options, layout=shrunk.plan, planned=planned
            )
            for p in plans
        ]
        yield out, regions
    finally:
        for fd in fds:
            os.close(fd)
        shrunk.discard()
