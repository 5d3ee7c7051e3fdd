"""A FUSE filesystem that holds one file, ``/volume``: the shape of the copy-on-write view of a
volume (cowfs.py) and of an unlocked volume's plaintext (unlockfs.py). Subclasses say how big
the file is and how it is read (and written)."""

from __future__ import annotations

import errno
import stat
import time
from typing import Any

import mfusepy

from clonebay.browse.cowfile import FILE


class OneFileFS(mfusepy.Operations):  # type: ignore[misc]
    """mfusepy operations for ``/`` and ``/volume``; ``mode``: the file's permission bits."""

    use_ns = True
    mode = 0o600

    def __init__(self) -> None:
        self._time = time.time_ns()

    @property
    def file_size(self) -> int:
        raise NotImplementedError

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        times = {"st_atime": self._time, "st_mtime": self._time, "st_ctime": self._time}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times}
        if path != "/" + FILE:
            raise mfusepy.FuseOSError(errno.ENOENT)
        size = self.file_size
        return {"st_mode": stat.S_IFREG | self.mode, "st_nlink": 1, "st_size": size, **times}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", FILE]

    def open(self, path: str, flags: int) -> int:
        if path != "/" + FILE:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return 0
