"""A file that refuses direct I/O, as some FUSE filesystems (and some network filesystems) do:
a FUSE filesystem that shows one read-write file, ``disk.img``, with the bytes of BACKING.

    python -m tests.directfuse BACKING MOUNTPOINT open|io

``open``: an open with O_DIRECT fails with EINVAL (the kernel passes the open flags to the
filesystem). ``io``: the open succeeds, but every read or write made through a descriptor opened
with O_DIRECT fails with EINVAL, as a filesystem that only finds out at the first transfer. Other
descriptors read and write BACKING. ``refusing`` starts it and unmounts it again, for tests."""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mfusepy

from tests.fusemount import served

NAME = "disk.img"


class RefusingFile(mfusepy.Operations):  # type: ignore[misc]
    """One read-write file over BACKING whose O_DIRECT opens or transfers fail with EINVAL."""

    def __init__(self, backing: str, mode: str) -> None:
        self.fd = os.open(backing, os.O_RDWR | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size
        self.mode = mode
        self.numbers = itertools.count(1)
        self.direct: set[int] = set()

    def init(self, path: str) -> None:
        print("ready", flush=True)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/" + NAME:
            return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": self.size}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", NAME]

    def open(self, path: str, flags: int) -> int:
        if path != "/" + NAME:
            raise mfusepy.FuseOSError(errno.ENOENT)
        if flags & os.O_DIRECT and self.mode == "open":
            raise mfusepy.FuseOSError(errno.EINVAL)
        fh = next(self.numbers)
        if flags & os.O_DIRECT:
            self.direct.add(fh)
        return fh

    def release(self, path: str, fh: int) -> int:
        self.direct.discard(fh)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if fh in self.direct:
            raise mfusepy.FuseOSError(errno.EINVAL)
        return os.pread(self.fd, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if fh in self.direct:
            raise mfusepy.FuseOSError(errno.EINVAL)
        if offset + len(data) > self.size:
            raise mfusepy.FuseOSError(errno.ENOSPC)
        return os.pwrite(self.fd, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        if length != self.size:
            raise mfusepy.FuseOSError(errno.EPERM)

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        os.fsync(self.fd)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0


@contextmanager
def refusing(backing: Path, mountpoint: Path, mode: str) -> Iterator[Path]:
    """``backing`` as ``mountpoint``/disk.img, refusing direct I/O; unmounted after."""
    with served("tests.directfuse", [str(backing), str(mountpoint), mode], mountpoint):
        yield mountpoint / NAME


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="directfuse", description=__doc__.splitlines()[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("mode", choices=["open", "io"])
    args = parser.parse_args(argv)
    operations = RefusingFile(args.backing, args.mode)
    mfusepy.FUSE(operations, args.mountpoint, foreground=True, direct_io=True, fsname="directfuse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
