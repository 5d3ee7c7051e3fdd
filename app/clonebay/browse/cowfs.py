"""The FUSE side of a copy-on-write volume view (cowfile.py): one writable file, ``/volume``,
served by the view daemon (daemon.py) over a BlockOverlay."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

import mfusepy

from clonebay.browse.cowfile import BlockOverlay
from clonebay.browse.onefile import OneFileFS

log = logging.getLogger(__name__)


class CowFileFS(OneFileFS):
    """mfusepy operations: one writable file, ``/volume``, over a BlockOverlay."""

    def __init__(self, overlay: BlockOverlay, close_base: Callable[[], None]) -> None:
        super().__init__()
        self.overlay = overlay
        self.close_base = close_base

    @property
    def file_size(self) -> int:
        return self.overlay.size

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
