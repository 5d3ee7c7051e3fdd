"""Verification: an image against itself (every frame re-read and hashed; a stream read through
with every record checked), and a restored or cloned target against the image it came from (every
recorded chunk read back from the target and compared with the xxh3-128 in the image's index or
the stream's INDEX records; zero records must read as zeros)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

import xxhash

from clonebay.errors import CancelledError, VerifyError
from clonebay.imaging.reader import ImageReader, Problem, VerifyReport
from clonebay.imaging.spec import ImageError, Record
from clonebay.imaging.stream import REC_FRAME
from clonebay.imaging.stream_read import StreamEnd, StreamReader
from clonebay.model import Progress
from clonebay.system.blockdev import FileSource

PIECE = 4 << 20

__all__ = [
    "PlacedRecords",
    "VerifyError",
    "verify_image",
    "verify_records",
    "verify_stream",
    "verify_target",
]


def verify_image(image: str, progress: Callable[[Progress], None] | None = None) -> VerifyReport:
    """Re-read every frame of ``image`` and check its hash; problems are listed, not raised."""
    started = time.monotonic()
    with ImageReader(image) as reader:

        def report(done: int, total: int) -> None:
            if progress:
                rate = done / max(time.monotonic() - started, 1e-6)
                eta = (total - done) / rate if rate else None
                progress(Progress("image", done, total, rate, eta, "read"))

        return reader.verify(report)


def verify_stream(
    source: IO[bytes],
    name: str,
    size: int = 0,
    progress: Callable[[Progress], None] | None = None,
) -> VerifyReport:
    """Read a stream through, checking every record (docs/format.md §10). A stream is read once,
    so it stops at the first problem, which the report lists; ``size``: bytes expected (or 0)."""
    report = VerifyReport()
    started = last = time.monotonic()
    try:
        reader = StreamReader(source, name)
        for event in reader.events():
            if isinstance(event, StreamEnd):
                break
            if event.kind == REC_FRAME and event.frame is not None:
                report.frames += 1
                report.stored_bytes += len(event.frame)
                report.raw_bytes += event.length
            now = time.monotonic()
            if progress and now - last > 0.5:
                last = now
                done = reader.position
                rate = done / max(now - started, 1e-6)
                eta = (size - done) / rate if size > done else None
                progress(Progress(event.name, done, max(size, done), rate, eta, "read"))
    except ImageError as exc:
        report.problems.append(Problem(name, None, None, str(exc)))
    return report


def verify_target(
    image: str,
    target: str,
    region: str | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Compare ``target`` with ``image``; returns a description of each chunk that differs.

    With ``region`` the target holds that one region at offset 0, else every region at its
    disk offset.
    """
    with ImageReader(image) as reader:
        entries = [reader.region(region)] if region else list(reader.regions)
        placed = [
            PlacedRecords(e.name, 0 if region else e.disk_offset, reader.records(e.name))
            for e in entries
        ]
        return verify_records(target, placed, progress=progress, cancel=cancel)


@dataclass(frozen=True)
class PlacedRecords:
    """A region's index records and where the region starts on the target."""

    region: str
    base: int
    records: Sequence[Record]


def verify_records(
    target: str,
    placed: Sequence[PlacedRecords],
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Read back every recorded chunk from ``target``: frame records must hash as recorded,
    zero and unreadable records must read as zeros. Returns a description of each difference.
    The records may come from an image directory or from a stream's INDEX records."""
    problems: list[str] = []
    with FileSource(target) as dev:
        dev.drop_cache()  # the medium, not the pages the restore just wrote
        total = sum(r.length for p in placed for r in p.records)
        done = 0
        started = last = time.monotonic()
        for part in placed:
            for rec in part.records:
                if cancel is not None and cancel.is_set():
                    raise CancelledError("verification cancelled")
                problem = _check(dev, part.region, part.base + rec.offset, rec)
                if problem:
                    problems.append(problem)
                done += rec.length
                now = time.monotonic()
                if progress and (now - last > 0.5 or done == total):
                    last = now
                    rate = done / max(now - started, 1e-6)
                    progress(
                        Progress(part.region, done, total, rate, (total - done) / rate, "read")
                    )
    return problems


def _check(dev: FileSource, region: str, at: int, rec: Record) -> str | None:
    if not rec.flags:
        if xxhash.xxh3_128_digest(dev.pread(rec.length, at)) == rec.digest:
            return None
        return (
            f"region {region} offset {rec.offset} ({rec.length} bytes) at target byte {at}:"
            " hash differs"
        )
    for pos in range(0, rec.length, PIECE):
        n = min(PIECE, rec.length - pos)
        if dev.pread(n, at + pos).count(0) != n:
            return (
                f"region {region} offset {rec.offset + pos}: expected {n} zero bytes at target"
                f" byte {at + pos}"
            )
    return None
