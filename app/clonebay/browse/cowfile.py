"""One volume as a writable file whose base is never written: the view a shrink resizes.

A shrink onto a smaller disk must let the filesystem's own resizer (resize2fs, ntfsresize) move
data and rewrite metadata, and the source must stay as it is. So the resizer runs on this view:
a single FUSE file, ``MOUNTPOINT/volume``, as large as the volume. Reads of blocks never written
come from the base (a partition of the source disk, read with ``pread`` on a read-only fd, or a
region of an image through its random access); the first write into a block (``BLOCK`` bytes)
copies the block up into a sparse overlay file at the same offset, and that block is read and
written there from then on. The base is only ever opened for reading.

The overlay holds exactly what the resizer changed: the data it moved from beyond the new end
and the metadata it rewrote. When the view is unmounted the daemon writes the list of changed
byte ranges (``OVERLAY.map``, JSON ``[[start, length], ...]``, written to a temporary name,
fsynced and renamed), so the copy that follows reads changed ranges from the overlay and the
rest straight from the base, without FUSE in the way (engine/shrink/view.py). The FUSE side is
in cowfs.py, so that the job's own process never loads libfuse.

A write is whole or fails: a full overlay filesystem gives ENOSPC to that write and to every
later one, and the map then records ``"failed"``, so a half-resized volume is never copied.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from clonebay.browse.cow import write_all

log = logging.getLogger(__name__)

BLOCK = 64 << 10  # copy-up unit: resizers write metadata in small, scattered pieces
FILE = "volume"
MAP_SUFFIX = ".map"

ReadAt = Callable[[int, int], bytes]  # (offset, length) -> bytes of the base (fewer at its end)


def disk_base(path: str, offset: int, size: int) -> tuple[ReadAt, Callable[[], None]]:
    """``size`` bytes at ``offset`` of ``path`` (a source disk or disk image), read-only."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def read_at(pos: int, length: int) -> bytes:
        length = max(0, min(length, size - pos))
        parts, got = [], 0
        while got < length:
            piece = os.pread(fd, length - got, offset + pos + got)
            if not piece:  # past the device's end (a truncated source): zeros, like a hole
                parts.append(bytes(length - got))
                break
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    return read_at, lambda: os.close(fd)


def image_base(image: str, region: str) -> tuple[ReadAt, Callable[[], None], int]:
    """A region of a directory image through its random access; also the region's size."""
    from clonebay.browse.fusefs import CACHE_FRAMES
    from clonebay.imaging.reader import ImageReader

    reader = ImageReader(image, cache_frames=CACHE_FRAMES)
    size = reader.region(region).size
    return (lambda pos, length: reader.read_at(region, pos, length)), reader.close, size


class BlockOverlay:
    """Copy-on-write of one volume: ``BLOCK``-sized blocks copied up into ``overlay`` on their
    first write; reads of clean blocks go to the base."""

    def __init__(self, read_base: ReadAt, size: int, overlay: Path) -> None:
        self.read_base = read_base
        self.size = size
        self.path = overlay
        self.dirty: set[int] = set()
        self.failure = ""
        self._lock = threading.Lock()
        self.fd = os.open(overlay, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        end = min(offset + length, self.size)
        pos = offset
        while pos < end:
            index = pos // BLOCK
            stop = min(end, (index + 1) * BLOCK)
            yield index, pos, stop - pos
            pos = stop

    def read(self, offset: int, length: int) -> bytes:
        parts = []
        for index, pos, size in self._pieces(offset, length):
            if index in self.dirty:
                parts.append(os.pread(self.fd, size, pos))
            else:
                parts.append(self.read_base(pos, size))
        return b"".join(parts)

    def write(self, offset: int, data: bytes) -> int:
        if offset + len(data) > self.size:
            raise OSError(errno.EFBIG, "past the end of the volume")
        with self._lock:
            if self.failure:
                raise OSError(errno.EIO, self.failure)
            try:
                view = memoryview(data)
                for index, pos, size in self._pieces(offset, len(data)):
                    if index not in self.dirty:
                        start = index * BLOCK
                        length = min(BLOCK, self.size - start)
                        if size < length:  # a partial write: the rest of the block first
                            write_all(self.fd, self.read_base(start, length), start)
                        self.dirty.add(index)
                    write_all(self.fd, view[pos - offset : pos - offset + size], pos)
            except OSError as exc:
                self.failure = f"write at byte {offset} failed: {exc.strerror or exc}"
                log.error("%s", self.failure)
                raise
        return len(data)

    def ranges(self) -> list[list[int]]:
        """The changed byte ranges, merged, in order."""
        out: list[list[int]] = []
        for index in sorted(self.dirty):
            start = index * BLOCK
            length = min(BLOCK, self.size - start)
            if out and out[-1][0] + out[-1][1] == start:
                out[-1][1] += length
            else:
                out.append([start, length])
        return out

    def save_map(self) -> None:
        """The changed ranges (or the failure) beside the overlay, atomically."""
        os.fsync(self.fd)
        body: dict[str, Any] = {"size": self.size, "block": BLOCK, "ranges": self.ranges()}
        if self.failure:
            body["failed"] = self.failure
        final = self.path.with_name(self.path.name + MAP_SUFFIX)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def close(self) -> None:
        os.close(self.fd)
