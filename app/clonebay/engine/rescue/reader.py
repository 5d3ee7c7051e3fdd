"""Rescue reading: get what a failing source still gives, the easy data first, and map the rest.

A failing disk gets slower and worse with every read of a bad area, so the order of reads is
GNU ddrescue's (its manual, "Algorithm"), applied to the used blocks only (free space is never
read):

1. **Copying, forward** (in the copy pipeline, ``read``): each chunk is read whole. When a read
   fails, the chunk is marked non-trimmed and the reads *skip ahead*: the next ``skip`` bytes are
   left non-tried, and the skip doubles with each failure in a row (from 64 KiB up to
   ``MAX_SKIP``), so a damaged zone costs a few failed reads instead of thousands, and every
   healthy zone past it is read in the first pass.
2. **Copying, backward** over what was skipped, again skipping on errors; then **forward
   without skipping** over what is still non-tried. Reading a bad zone from its other end
   gets the data up to its far edge.
3. **Trimming**: each non-trimmed block is read sector by sector from its start forward and
   from its end backward, up to the first failure on each side (that sector is bad); the
   inside becomes non-scraped.
4. **Scraping**: every sector of the non-scraped blocks, once.
5. **Retrying** (``--retries N``): every bad sector again, N passes, alternately backward and
   forward.

What passes 2-5 read is handed to ``deliver(pos, data)`` (the save adds it to the image as a
new revision, the clone writes it to its targets); whatever stays bad is zeros in the copy, an
UNREADABLE record in an image, and listed. The map (mapfile.py) is saved at most once a second
while it changes and at the end of each pass.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from clonebay.engine.rescue.mapfile import (
    BAD,
    FINISHED,
    NON_SCRAPED,
    NON_TRIED,
    NON_TRIMMED,
    Block,
    RescueMap,
)
from clonebay.errors import CancelledError, DeviceError, UsageError
from clonebay.model import Extent
from clonebay.system.blockdev import SourceDevice
from clonebay.system.directio import DirectFile
from clonebay.system.readtimeout import bounded_reads

log = logging.getLogger(__name__)

MIN_SKIP = 64 << 10  # the first skip after a failed read (ddrescue's default)
MAX_SKIP = 1 << 30  # the skip stops doubling here
SAVE_EVERY = 1.0  # seconds between two saves of a changing map
# a read error that means the device itself is gone, not a bad sector
GONE = {errno.ENODEV, errno.ENXIO, errno.ENOMEDIUM, errno.ENOTCONN, errno.ESHUTDOWN}

T = TypeVar("T")
Deliver = Callable[[int, bytes], None]  # (source position, bytes read there)


@dataclass(frozen=True)
class RescueOptions:
    """``--rescue``: read a failing source as above; ``retries``: passes over bad sectors;
    ``map_path``: where the map is kept ("" = the job's default place)."""

    retries: int = 1
    map_path: str = ""


@dataclass
class RescueSummary:
    """What the rescue left unreadable in the domain (the used blocks), and its passes."""

    bad_bytes: int = 0
    bad: tuple[Extent, ...] = ()  # source positions
    passes: tuple[str, ...] = ()


class Rescuer:
    """A rescue of one source: its map, the skip state of the copying pass, and the later
    passes. ``sector``: the smallest read (the device's logical sector)."""

    def __init__(
        self,
        io: DirectFile,
        rescue_map: RescueMap,
        sector: int,
        cancel: threading.Event,
        *,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.io = io
        self.map = rescue_map
        self.sector = sector
        self.cancel = cancel
        self.note = note or (lambda text: log.info("%s", text))
        self.lock = threading.Lock()
        self.exact = True  # direct reads give single sectors (a block device)
        self.skip = MIN_SKIP
        self.skip_until = -1
        self.passes: list[str] = []
        self.area_bad: list[Extent] = []  # bad sectors outside the partitions (read_area)
        self.resumed = False  # the map is an interrupted job's
        self.timeout: int | None = None  # the disk's command timeout while rescuing (s)
        self._bound = contextlib.ExitStack()
        self._saved = 0.0

    @classmethod
    def open(
        cls,
        src: SourceDevice,
        path: Path,
        cancel: threading.Event,
        command: str,
        *,
        resume: bool = False,
    ) -> Rescuer:
        """A rescue of ``src`` with a new map at ``path`` (refused if one is there: it holds
        an earlier rescue's record); ``resume``: go on with the map there (it must be)."""
        if resume and not path.is_file():
            raise UsageError(
                f"the interrupted rescue's map {path} is not there: it records what was"
                " read and what was not; give its place with --mapfile"
            )
        if path.exists() and not resume:
            raise UsageError(
                f"the rescue map {path} already exists (an earlier rescue of this source?):"
                " resume that job with --resume, or move the map away, or give another"
                " place with --mapfile"
            )
        if not path.parent.is_dir():
            raise UsageError(f"the rescue map's folder {path.parent} does not exist")
        rescue_map = RescueMap.load(path, src.size) if resume else RescueMap(src.size, path)
        rescue_map.command = command
        block = stat.S_ISBLK(os.fstat(src.fd).st_mode)
        rescuer = cls(src.io, rescue_map, src.io.align if block else 512, cancel)
        rescuer.exact = block
        rescuer.resumed = resume
        rescuer.timeout = rescuer._bound.enter_context(bounded_reads(src.path))
        rescuer.save(force=True)
        return rescuer

    def close(self) -> None:
        """The rescue is over: the disk's command timeout is as it was."""
        self._bound.close()

    def forget(self, ranges: Iterable[Extent]) -> None:
        """A resumed job lost what it had read in ``ranges`` (source positions: read after its
        last checkpoint, or held only in memory): finished there becomes non-tried again."""
        with self.lock:
            for e in ranges:
                for block in self.map.ranges(FINISHED, (e.start, e.end)):
                    self.map.mark(block.pos, block.size, NON_TRIED)
        self.save(force=True)

    def settle(self, ranges: Iterable[Extent]) -> None:
        """A resumed job holds the data of ``ranges`` (in its image or on its target, as its
        checkpoint says): they are finished, whatever the map, saved up to a second before
        the stop, still said."""
        with self.lock:
            for e in ranges:
                self.map.mark(e.start, e.length, FINISHED)
        self.save(force=True)

    # -- pass 1, from the pipeline's reader threads ------------------------------------------------

    def read(self, view: memoryview, pos: int) -> tuple[tuple[int, int], ...]:
        """Fill ``view`` from source position ``pos``; what could not be read, as (offset,
        length) in ``view`` (zeroed there): the whole chunk after a failure, or when it lies in
        the skipped zone after one."""
        with self.lock:
            skipped = pos < self.skip_until
            if self.resumed:  # an area an earlier run found bad waits for the later passes
                skipped = skipped or not self.map.ranges(NON_TRIED, (pos, pos + len(view)))
        if not skipped:
            try:
                got = self.io.read_into(view, pos)
            except OSError as exc:
                self._check_present(pos, exc)
                self._failed(pos, len(view), exc.strerror or str(exc))
            else:
                if got == len(view):
                    with self.lock:
                        self.skip = MIN_SKIP
                    return ()
                self._failed(pos, len(view), f"the source ended after {got} bytes")
        view[:] = bytes(len(view))
        return ((0, len(view)),)

    def _failed(self, pos: int, length: int, why: str) -> None:
        with self.lock:
            self.map.mark(pos, length, NON_TRIMMED)
            self.skip_until = max(self.skip_until, pos + length + self.skip)
            self.skip = min(self.skip * 2, MAX_SKIP)
        self.note(f"read error at byte {pos} ({why}): skipping ahead")
        self.save(force=True)

    def delivered(self, pos: int, length: int, missing: Iterable[tuple[int, int]]) -> None:
        """A chunk read in pass 1 reached the image or the targets: its read parts are done."""
        with self.lock:
            holes = sorted(missing)
            at = 0
            for offset, size in [*holes, (length, 0)]:
                if offset > at:
                    self.map.mark(pos + at, offset - at, FINISHED)
                at = max(at, offset + size)
        self.save()

    def read_area(self, pos: int, length: int) -> bytes:
        """An area outside the partitions (boot code, partition tables), read at once: whole,
        else sector by sector, bad sectors as zeros (mapped, and listed in ``area_bad``)."""
        data = self._try(pos, length)
        if data is not None:
            self._done(pos, length)
            return data
        out = bytearray()
        for at, n in _sectors(Block(pos, length, NON_TRIED), self.sector):
            piece = self._try(at, n)
            if piece is None:
                self._mark(at, n, BAD)
                self.area_bad.append(Extent(at, n))
            else:
                self._done(at, n)
            out += piece or bytes(n)
        self.save(force=True)
        return bytes(out)

    # -- passes 2-5 ----------------------------------------------------------------------------

    def later_passes(self, domain: Iterable[Extent], deliver: Deliver, retries: int) -> None:
        """Read what pass 1 left (within ``domain``, the used blocks), handing each piece read
        to ``deliver``."""
        spans = [(e.start, e.end) for e in domain]
        chunk = 1 << 20
        self._copy_pass("copying backward", spans, deliver, chunk, backward=True, skipping=True)
        self._copy_pass("copying forward", spans, deliver, chunk, backward=False, skipping=False)
        self._trim(spans, deliver)
        self._scrape(spans, deliver, NON_SCRAPED, "scraping", backward=False)
        for n in range(retries):
            self._scrape(spans, deliver, BAD, f"retry {n + 1} of {retries}", backward=n % 2 == 0)
        self.map.current_status = FINISHED
        self.save(force=True)

    def _blocks(self, spans: list[tuple[int, int]], status: str) -> list[Block]:
        with self.lock:
            return [b for span in spans for b in self.map.ranges(status, span)]

    def _copy_pass(
        self,
        name: str,
        spans: list[tuple[int, int]],
        deliver: Deliver,
        chunk: int,
        *,
        backward: bool,
        skipping: bool,
    ) -> None:
        blocks = self._blocks(spans, NON_TRIED)
        if not blocks:
            return
        self._begin(name, NON_TRIED)
        skip = MIN_SKIP
        skipped: tuple[int, int] = (0, 0)  # the zone left for the next pass after a failure
        pieces = [
            (pos, min(chunk, b.end - pos)) for b in blocks for pos in range(b.pos, b.end, chunk)
        ]
        for pos, length in reversed(pieces) if backward else pieces:
            self._check_cancel()
            if skipped[0] <= pos < skipped[1] or skipped[0] < pos + length <= skipped[1]:
                continue
            if self._read(pos, length, deliver, NON_TRIMMED):
                skip = MIN_SKIP
                continue
            if skipping:
                skipped = (pos - skip, pos) if backward else (pos + length, pos + length + skip)
                skip = min(skip * 2, MAX_SKIP)
            self.save(force=True)

    def _trim(self, spans: list[tuple[int, int]], deliver: Deliver) -> None:
        blocks = self._blocks(spans, NON_TRIMMED)
        if not blocks:
            return
        self._begin("trimming", NON_TRIMMED)
        for block in blocks:
            low, high = block.pos, block.end
            for at, n in _sectors(block, self.sector):  # forward from the leading edge
                self._check_cancel()
                low = at + n
                if not self._read(at, n, deliver, BAD):
                    break
            inside = Block(low, high - low, NON_TRIMMED)
            for at, n in reversed(_sectors(inside, self.sector)):  # back from the trailing edge
                self._check_cancel()
                high = at
                if not self._read(at, n, deliver, BAD):
                    break
            if high > low:
                self._mark(low, high - low, NON_SCRAPED)
            self.save()

    def _scrape(
        self,
        spans: list[tuple[int, int]],
        deliver: Deliver,
        status: str,
        name: str,
        *,
        backward: bool,
    ) -> None:
        blocks = self._blocks(spans, status)
        if not blocks:
            return
        self._begin(name, status)
        sectors = [piece for b in blocks for piece in _sectors(b, self.sector)]
        for pos, n in reversed(sectors) if backward else sectors:
            self._check_cancel()
            self._read(pos, n, deliver, BAD)
            self.save()

    # -- one read ------------------------------------------------------------------------------

    def _read(self, pos: int, length: int, deliver: Deliver, failed: str) -> bool:
        """Read a piece for a later pass: delivered and finished, or marked ``failed``."""
        data = self._try(pos, length)
        if data is None:
            self._mark(pos, length, failed)
            return False
        deliver(pos, data)
        self._done(pos, length)
        return True

    def _try(self, pos: int, length: int) -> bytes | None:
        """``length`` bytes at ``pos``, or None when the source fails to give them."""
        try:  # a block device's direct reads are one sector; a file's exact, through its cache
            data = self.io.read(length, pos) if self.exact else os.pread(self.io.fd, length, pos)
        except OSError as exc:
            self._check_present(pos, exc)
            log.debug("read of %d bytes at %d failed: %s", length, pos, exc.strerror)
            return None
        return data if len(data) == length else None

    def _check_present(self, pos: int, exc: OSError) -> None:
        """A read failed: if the source itself is gone (unplugged, its driver or FUSE server
        dead), stop at once with the map saved, instead of failing every read that follows
        as a bad sector."""
        gone = exc.errno in GONE or not os.path.exists(self.io.path)
        if not gone:
            return
        with contextlib.suppress(OSError):
            self.save(force=True)
        raise DeviceError(
            f"the source {self.io.path} stopped answering at byte {pos}"
            f" ({exc.strerror or exc}): it was unplugged or its device went away; the map"
            f" {self.map.path} records what was read up to here"
        ) from exc

    def _mark(self, pos: int, length: int, status: str) -> None:
        with self.lock:
            self.map.mark(pos, length, status)

    def _done(self, pos: int, length: int) -> None:
        with self.lock:
            self.map.mark(pos, length, FINISHED)
            self.map.current_pos = pos + length

    def _begin(self, name: str, status: str) -> None:
        self.passes.append(name)
        self.map.current_status = status
        self.map.current_pass = len(self.passes) + 1
        self.note(f"rescue: {name}")
        self.save(force=True)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            self.save(force=True)
            raise CancelledError("cancelled by the user")

    def save(self, *, force: bool = False) -> None:
        """Save the map when forced, or when the last save is ``SAVE_EVERY`` seconds old."""
        now = time.monotonic()
        if not force and now - self._saved < SAVE_EVERY:
            return
        with self.lock:
            self._saved = now
            self.map.save()

    def summary(self, domain: Iterable[Extent]) -> RescueSummary:
        spans = [(e.start, e.end) for e in domain]
        left = self._blocks(spans, NON_TRIED + NON_TRIMMED + NON_SCRAPED + BAD)
        return RescueSummary(
            bad_bytes=sum(b.size for b in left),
            bad=tuple(Extent(b.pos, b.size) for b in left),
            passes=tuple(self.passes),
        )


def _sectors(block: Block, sector: int) -> list[tuple[int, int]]:
    """``block`` cut at sector boundaries: (position, length) of each piece."""
    out, pos = [], block.pos
    while pos < block.end:
        n = min(sector - pos % sector, block.end - pos)
        out.append((pos, n))
        pos += n
    return out


def split_at(
    areas: Iterable[tuple[T, int, int]], pos: int, length: int
) -> Iterator[tuple[T, int, int]]:
    """Source range ``[pos, pos + length)`` cut by ``areas`` (key, start, size) on the source:
    (key, offset in that area, length) of each part inside one."""
    for key, start, size in areas:
        low, high = max(pos, start), min(pos + length, start + size)
        if low < high:
            yield key, low - start, high - low
