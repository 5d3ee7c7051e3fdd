"""The FUSE side of an unlocked volume: one read-only file, ``/volume``, the plaintext of a
BitLocker or LUKS partition file (fs/unlock.py), for ntfs-3g or the ext driver to mount.

The keys come on the view daemon's standard input (procs.start_daemon), never its command line;
the opened key lives only in this process's memory, until the volume is unmounted.
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from typing import Any

import mfusepy

from clonebay.fs.keyring import Keyring
from clonebay.fs.unlock import open_view
from clonebay.system.blockdev import ByteSource, FileSource

FILE = "volume"
log = logging.getLogger(__name__)


class UnlockedFS(mfusepy.Operations):  # type: ignore[misc]
    """mfusepy operations: ``/volume``, read-only, the plaintext ``view``."""

    use_ns = True

    def __init__(self, view: ByteSource, source: FileSource) -> None:
        self.view = view
        self.source = source
        self._time = time.time_ns()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        times = {"st_atime": self._time, "st_mtime": self._time, "st_ctime": self._time}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o500, "st_nlink": 2, **times}
        if path != "/" + FILE:
            raise mfusepy.FuseOSError(errno.ENOENT)
        size = self.view.size
        return {"st_mode": stat.S_IFREG | 0o400, "st_nlink": 1, "st_size": size, **times}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", FILE]

    def open(self, path: str, flags: int) -> int:
        if path != "/" + FILE:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        size = max(0, min(size, self.view.size - offset))
        try:
            return self.view.pread(size, offset)
        except OSError as exc:
            log.error("read at %d (+%d): %s", offset, size, exc)
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def destroy(self, path: str) -> None:
        self.source.close()


def unlocked_operations(partition: str, secrets: bytes) -> UnlockedFS:
    """The operations serving ``partition``'s plaintext, opened with ``secrets`` (Keyring JSON)."""
    source = FileSource(partition)
    return UnlockedFS(open_view(source, Keyring.from_json(secrets)), source)
