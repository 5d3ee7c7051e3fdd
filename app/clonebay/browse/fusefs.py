"""The FUSE view of an image: each partition a file, its bytes served through ``read_at``.

``MOUNTPOINT/.partitions/p1``, ``p2``, ... are files as large as the partitions. A read is
answered from the image's index: only the frames under the range are read and decoded, and the
reader keeps the last ``CACHE_FRAMES`` decoded frames (the chunk cache), because filesystem
drivers come back to the same metadata (superblock, group descriptors, $MFT, the FAT) again
and again. On top of these files the system's own drivers mount each filesystem (mounts.py).

In edit mode the files are writable and writes go to a copy-on-write overlay (cow.py); the
image itself is never written by the view. A write is whole or fails (ENOSPC when the scratch
area is full, EIO when the image could not be read for the copy-up), and after one failure
every write of that edit fails: it can no longer be committed.

A damaged frame gives EIO for the read that met it, never wrong bytes, and the view stays up.
The message (file, region, offset, what is wrong) goes to the view's log and into
``.partitions/.clonebay-stats``, a small JSON file with the reader's statistics (frames decoded,
cache hits, bytes read) and the last errors, which ``ls`` and the tests read.
"""

from __future__ import annotations

import calendar
import collections
import errno
import json
import logging
import stat
import threading
import time
from typing import Any

import mfusepy

from clonebay.browse.cow import Overlay
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import ImageError

log = logging.getLogger(__name__)

CACHE_FRAMES = 32  # 128 MiB of decoded 4 MiB frames at most; metadata frames stay cached
STATS_FILE = ".clonebay-stats"
STATS_SIZE = 4096  # fixed, space-padded: FUSE needs the size before the content is read
MAX_ERRORS = 8  # last error messages kept for the stats file
VIEW_KINDS = ("partition", "disk")


class PartitionsFS(mfusepy.Operations):  # type: ignore[misc]
    """mfusepy operations: a flat folder of region files (read-only unless an overlay is given)."""

    use_ns = True

    def __init__(self, reader: ImageReader, overlay: Overlay | None = None) -> None:
        self.reader = reader
        self.overlay = overlay
        self.files = {r.name: r for r in reader.regions if r.kind in VIEW_KINDS}
        self.errors: collections.deque[str] = collections.deque(maxlen=MAX_ERRORS)
        self.error_count = 0
        self._lock = threading.Lock()
        self._time = _created_ns(reader.manifest.created)

    # -- attributes and folder ----------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        times = {"st_atime": self._time, "st_mtime": self._time, "st_ctime": self._time}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, **times}
        if path == "/" + STATS_FILE:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": STATS_SIZE, **times}
        region = self.files.get(path[1:])
        if region is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        mode = 0o644 if self.overlay else 0o444
        return {"st_mode": stat.S_IFREG | mode, "st_nlink": 1, "st_size": region.size, **times}

    def readdir(self, path: str, fh: int) -> list[str]:
        if path != "/":
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return [".", "..", *self.files, STATS_FILE]

    def open(self, path: str, flags: int) -> int:
        if path[1:] not in self.files and path != "/" + STATS_FILE:
            raise mfusepy.FuseOSError(errno.ENOENT)
        writing = flags & 3 != 0  # O_WRONLY or O_RDWR
        if writing and (self.overlay is None or path == "/" + STATS_FILE):
            raise mfusepy.FuseOSError(errno.EROFS)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        size = sum(r.size for r in self.files.values())
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": size // 4096, "f_namemax": 255}

    # -- data ---------------------------------------------------------------------------------

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if path == "/" + STATS_FILE:
            return self.stats_bytes()[offset : offset + size]
        name = path[1:]
        try:
            if self.overlay is not None:
                return self.overlay.read(name, offset, size)
            return self.reader.read_at(name, offset, size, fail_unreadable=True)
        except ImageError as exc:
            self._error(f"read of {name} at {offset} (+{size}): {exc}")
            raise mfusepy.FuseOSError(errno.EIO) from None
        except OSError as exc:
            self._error(f"read of {name} at {offset} (+{size}): {exc}")
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if self.overlay is None:
            raise mfusepy.FuseOSError(errno.EROFS)
        name = path[1:]
        try:
            return self.overlay.write(name, offset, data)  # all of it, or OSError
        except OSError as exc:  # ENOSPC: the scratch area is full (the edit is over)
            self._error(f"write to {name} at {offset}: {exc}")
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        region = self.files.get(path[1:])
        if region is None or length != region.size:
            raise mfusepy.FuseOSError(errno.EPERM)  # a partition keeps its size
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        if self.overlay is not None:
            self.overlay.flush()
        return 0

    def flush(self, path: str, fh: int) -> int:
        return self.fsync(path, 0, fh)

    def destroy(self, path: str) -> None:
        if self.overlay is not None:
            self.overlay.flush()
            self.overlay.close()
        self.reader.close()

    # -- diagnostics --------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        log.error("%s", message)
        with self._lock:
            self.errors.append(message)
            self.error_count += 1

    def stats_bytes(self) -> bytes:
        """The stats file: reader counters, error count and the last errors, padded JSON."""
        with self._lock:
            body: dict[str, Any] = {
                "reader": self.reader.stats.as_dict(),
                "errors": self.error_count,
                "last_errors": list(self.errors),
                "dirty_chunks": sum(len(d) for d in self.overlay.dirty.values())
                if self.overlay
                else 0,
            }
        text = json.dumps(body).encode()
        while len(text) > STATS_SIZE - 1 and body["last_errors"]:
            body["last_errors"] = body["last_errors"][1:]
            text = json.dumps(body).encode()
        return text[: STATS_SIZE - 1].ljust(STATS_SIZE - 1) + b"\n"


def _created_ns(created: str) -> int:
    """The manifest's ``created`` (UTC, YYYY-MM-DDTHH:MM:SSZ) in ns; 0 when unreadable."""
    try:
        return calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) * 10**9
    except ValueError:
        return 0
