"""A disk image with a bad block: a FUSE filesystem that shows one file, ``disk.img``, read-only,
with the bytes of BACKING, except that every read overlapping [START, START + LENGTH) fails with
EIO, as a read of a failing sector does.

    python -m tests.faultfile BACKING MOUNTPOINT START LENGTH

It runs in the foreground until MOUNTPOINT is unmounted (``fusermount3 -u``) and prints "ready"
on stdout once mounted. Reads bypass the page cache (direct_io), so each read the program under
test makes reaches this process with its own offset and length: one that overlaps the bad range
fails whole, as the block layer fails a whole request; the others succeed. ``failing`` starts
it and unmounts it again, for tests.

With ``--writes`` the file is writable and the bad range fails *writes* instead (reads all
succeed), as a target disk with a failing sector does: ``python -m tests.faultfile --writes
BACKING MOUNTPOINT START LENGTH``. Writes go to BACKING."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mfusepy

from tests.fusemount import served

NAME = "disk.img"
SLOW = 0.4  # seconds a read touching a slow range waits per MiB it asks for (a 512-byte read
# waits 0.2 ms, a 1 MiB one 0.4 s: a slow disk, whose rescue's sector reads still end)
SLOW_FAIL = 0.05  # seconds a read that fails in a slow range waits at least


class FaultFile(mfusepy.Operations):  # type: ignore[misc]
    """One read-only file over BACKING with EIO for reads that touch the bad range."""

    def __init__(
        self,
        backing: str,
        start: int,
        length: int,
        *,
        writes: bool = False,
        more: Sequence[tuple[int, int]] = (),
        slow: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.writes = writes
        self.fd = os.open(backing, (os.O_RDWR if writes else os.O_RDONLY) | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size
        self.bad = [(a, a + n) for a, n in ((start, length), *more)]
        self.slow = [(a, a + n) for a, n in slow]
        self.failed = 0

    def init(self, path: str) -> None:
        print("ready", flush=True)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
        if path == "/" + NAME:
            mode = 0o644 if self.writes else 0o444
            return {"st_mode": stat.S_IFREG | mode, "st_nlink": 1, "st_size": self.size}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", NAME]

    def open(self, path: str, flags: int) -> int:
        if path != "/" + NAME:
            raise mfusepy.FuseOSError(errno.ENOENT)
        if flags & os.O_ACCMODE != os.O_RDONLY and not self.writes:
            raise mfusepy.FuseOSError(errno.EROFS)
        return 0

    @staticmethod
    def _touches(ranges: list[tuple[int, int]], offset: int, size: int) -> bool:
        return any(offset < end and offset + size > start for start, end in ranges)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if self._touches(self.slow, offset, size):  # a failing read: as a disk's own retries
            fails = not self.writes and self._touches(self.bad, offset, size)
            time.sleep(max(SLOW * size / (1 << 20), SLOW_FAIL if fails else 0))
        if not self.writes and self._touches(self.bad, offset, size):
            self.failed += 1
            raise mfusepy.FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if not self.writes:
            raise mfusepy.FuseOSError(errno.EROFS)
        if self._touches(self.bad, offset, len(data)):
            self.failed += 1
            raise mfusepy.FuseOSError(errno.EIO)
        return os.pwrite(self.fd, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        if length != self.size:
            raise mfusepy.FuseOSError(errno.EINVAL)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        os.fsync(self.fd)

    def flush(self, path: str, fh: int) -> None:
        return None


@contextmanager
def failing(
    backing: Path,
    mountpoint: Path,
    start: int,
    length: int,
    *,
    writes: bool = False,
    more: Sequence[tuple[int, int]] = (),
    slow: Sequence[tuple[int, int]] = (),
) -> Iterator[Path]:
    """``backing`` with a bad range (for reads, or with ``writes`` for writes), and the
    ``more`` ones, (start, length) each, as ``mountpoint``/disk.img; reads touching a ``slow``
    range wait SLOW seconds per MiB first. Unmounted after."""
    args = [str(backing), str(mountpoint), str(start), str(length)]
    args += [f"--bad={a}:{n}" for a, n in more] + [f"--slow={a}:{n}" for a, n in slow]
    with served("tests.faultfile", ["--writes", *args] if writes else args, mountpoint):
        yield mountpoint / NAME


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faultfile", description=__doc__.splitlines()[0])
    parser.add_argument("--writes", action="store_true", help="fail writes, not reads")
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("start", type=int, help="first byte that fails")
    parser.add_argument("length", type=int, help="bytes that fail")
    parser.add_argument(
        "--bad", action="append", default=[], metavar="START:LENGTH", help="another bad range"
    )
    parser.add_argument(
        "--slow", action="append", default=[], metavar="START:LENGTH", help="a slow range"
    )
    args = parser.parse_args(argv)
    more, slow = (
        [(int(a), int(n)) for a, _, n in (spec.partition(":") for spec in specs)]
        for specs in (args.bad, args.slow)
    )
    operations = FaultFile(
        args.backing, args.start, args.length, writes=args.writes, more=more, slow=slow
    )
    mfusepy.FUSE(
        operations,
        args.mountpoint,
        foreground=True,
        ro=not args.writes,
        direct_io=True,
        fsname="faultfile",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
