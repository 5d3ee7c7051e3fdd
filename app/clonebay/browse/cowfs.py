"""The FUSE side of a copy-on-write volume view (cowfile.py): one writable file, ``/volume``,
served by the view daemon (daemon.py) over a BlockOverlay."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Any

import mfusepy

from clonebay.browse.cowfile import FILE, BlockOverlay

log = logging.getLogger(__name__)


class CowFileFS(mfusepy.Operations):  # type: ignore[misc]
    """mfusepy operations: one writable file, ``/volume``, over a BlockOverlay."""

    use_ns = True

    def __init__(self, overlay: BlockOverlay, close_base: Callable[[], None]) -> None:
        self.overlay = overlay
        self.close_base = close_base
        self._time = time.time_ns()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        times = {"st_atime": self._time, "st_mtime": self._time, "st_ctime": self._time}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times}
        if path != "/" + FILE:
            raise mfusepy.FuseOSError(errno.ENOENT)
        size = self.overlay.size
        return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": size, **times}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", FILE]

    def open(self, path: str, flags: int) -> int:
        if path != "/" + FILE:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        try:
            return self.overlay.read(offset, size)
        except OSError as exc:
            log.error("read at %d (+%d): %s", offset, size, exc)
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        try:
            return self.overlay.write(offset, data)
        except OSError as exc:
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if length != self.overlay.size:
            raise mfusepy.FuseOSError(errno.EPERM)  # the volume keeps its size
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        os.fsync(self.overlay.fd)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        size = self.overlay.size
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": size // 4096, "f_namemax": 255}

    def destroy(self, path: str) -> None:
        self.overlay.save_map()
        self.overlay.close()
        self.close_base()
