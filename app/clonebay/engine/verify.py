"""Verification: an image against itself (every frame re-read and hashed), and a restored or
cloned target against the image it came from (every recorded chunk read back from the target and
compared with the xxh3-128 in the image's index; zero records must read as zeros)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import xxhash

from clonebay.errors import CancelledError, VerifyError
from clonebay.imaging.reader import ImageReader, VerifyReport
from clonebay.model import Progress
from clonebay.system.blockdev import FileSource

PIECE = 4 << 20

__all__ = ["VerifyError", "verify_image", "verify_target"]


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
    problems: list[str] = []
    with ImageReader(image) as reader, FileSource(target) as dev:
        entries = [reader.region(region)] if region else list(reader.regions)
        total = sum(r.length for e in entries for r in reader.records(e.name))
        done = 0
        started = last = time.monotonic()
        for entry in entries:
            base = 0 if region else entry.disk_offset
            for rec in reader.records(entry.name):
                if cancel is not None and cancel.is_set():
                    raise CancelledError("verification cancelled")
                at = base + rec.offset
                if rec.flags:
                    for pos in range(0, rec.length, PIECE):
                        n = min(PIECE, rec.length - pos)
                        if dev.pread(n, at + pos).count(0) != n:
                            problems.append(
                                f"region {entry.name} offset {rec.offset + pos}: expected"
                                f" {n} zero bytes at target byte {at + pos}"
                            )
                            break
                elif xxhash.xxh3_128_digest(dev.pread(rec.length, at)) != rec.digest:
                    problems.append(
                        f"region {entry.name} offset {rec.offset} ({rec.length} bytes) at target"
                        f" byte {at}: hash differs"
                    )
                done += rec.length
                now = time.monotonic()
                if progress and (now - last > 0.5 or done == total):
                    last = now
                    rate = done / max(now - started, 1e-6)
                    progress(Progress(entry.name, done, total, rate, (total - done) / rate, "read"))
    return problems
