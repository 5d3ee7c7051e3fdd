"""Opening block devices and image files, and reading them at byte offsets.

A ``ByteSource`` is how fs/ parsers see a volume: a size and ``pread(length, offset)`` relative to
the volume's start, nothing else, so they are pure functions of bytes and can be fed from a
partition on a disk, a plain file, or an in-memory buffer in tests. Reads past the end are refused
with a message naming the source and offset rather than returning short data silently.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from types import TracebackType
from typing import Protocol

from clonebay.errors import DeviceError, InputError

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKPBSZGET = 0x127B


class ByteSource(Protocol):
    """Read-only random access to a volume's bytes."""

    @property
    def size(self) -> int: ...

    @property
    def name(self) -> str: ...

    def pread(self, length: int, offset: int) -> bytes: ...


def device_size(fd: int) -> int:
    """Size in bytes of an open block device or regular file."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISBLK(mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return int(struct.unpack("Q", buf)[0])
    return os.fstat(fd).st_size


def sector_sizes(fd: int) -> tuple[int, int]:
    """(logical, physical) sector size of an open block device; (512, 512) for a file."""
    if not stat.S_ISBLK(os.fstat(fd).st_mode):
        return 512, 512
    logical = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    physical = struct.unpack("i", fcntl.ioctl(fd, BLKPBSZGET, b"\0" * 4))[0]
    return int(logical), int(physical)


class FileSource:
    """A window ``[offset, offset + size)`` of a file or block device, opened read-only."""

    def __init__(self, path: str, offset: int = 0, size: int | None = None) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError(f"cannot open {path} for reading: {exc.strerror}") from exc
        total = device_size(self._fd)
        self._path = path
        self._offset = offset
        self._size = total - offset if size is None else size
        if offset < 0 or self._size < 0 or offset + self._size > total:
            os.close(self._fd)
            raise InputError(
                f"{path}: range {offset}+{self._size} lies outside the device ({total} bytes);"
                " the partition table does not fit this disk (truncated image?)"
            )

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        if self._offset:
            return f"{self._path}@{self._offset}"
        return self._path

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise InputError(
                f"{self.name}: read of {length} bytes at offset {offset} is past the end"
                f" ({self._size} bytes)"
            )
        try:
            data = os.pread(self._fd, length, self._offset + offset)
        except OSError as exc:
            raise DeviceError(
                f"{self.name}: read error at offset {offset}: {exc.strerror}"
            ) from exc
        if len(data) != length:
            raise InputError(f"{self.name}: short read at offset {offset} (truncated?)")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BytesSource:
    """A ByteSource over bytes in memory (tests, fuzzing, small structures)."""

    def __init__(self, data: bytes, name: str = "<memory>") -> None:
        self._data = data
        self._name = name

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def name(self) -> str:
        return self._name

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > len(self._data):
            raise InputError(
                f"{self._name}: read of {length} bytes at offset {offset} is past the end"
                f" ({len(self._data)} bytes)"
            )
        return self._data[offset : offset + length]
