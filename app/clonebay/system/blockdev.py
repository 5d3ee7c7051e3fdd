"""Opening block devices and image files, and reading them at byte offsets.

A ``ByteSource`` is how fs/ parsers see a volume: a size and ``pread(length, offset)`` relative to
the volume's start, nothing else, so they are pure functions of bytes and can be fed from a
partition on a disk, a plain file, or an in-memory buffer in tests. Reads past the end are refused
with a message naming the source and offset rather than returning short data silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import stat
import struct
import threading
from types import TracebackType
from typing import Protocol

from clonebay.errors import DeviceError, InputError
from clonebay.system.directio import DirectFile, close_quietly, direct_default
from clonebay.system.readonly import ReadOnlyHold, hold_source

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


def drop_cache(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to forget the cached pages of ``fd`` (clean pages only: call after fsync),
    all of them or ``length`` bytes at ``offset``. Best effort: a pipe or an odd filesystem may
    refuse, and the read then comes from memory."""
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


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

    def drop_cache(self) -> None:
        """Read from the medium from now on, not from cached pages (see ``drop_cache``)."""
        drop_cache(self._fd)

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


BLKFLSBUF = 0x1261


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


class SourceDevice:
    """A source opened read-only. A block device is also set read-only in the kernel (BLKROSET)
    for as long as it is open, with its whole disk, every partition of that disk and every
    device under it, so that nothing in this process or another can write it by mistake. The
    flags are shared with other clonebay jobs reading the same disk (system/readonly.py): the
    last one to close puts the previous settings back. ``io`` reads it with direct I/O where the
    kernel allows (system/directio.py)."""

    def __init__(self, path: str, *, direct: bool | None = None) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError(f"cannot open source {path}: {exc.strerror}") from exc
        self.size = device_size(self.fd)
        self._hold: ReadOnlyHold | None = None
        if stat.S_ISBLK(os.fstat(self.fd).st_mode):
            try:
                self._hold = hold_source(path)
            except BaseException:
                os.close(self.fd)
                raise
        use_direct = direct_default() if direct is None else direct
        self.io = DirectFile(
            path, self.fd, os.O_RDONLY, sector_sizes(self.fd)[0], direct=use_direct
        )

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            if self._hold is not None:
                self._hold.release()
                self._hold = None
        finally:
            self.io.close()
            fd, self.fd = self.fd, -1
            close_quietly(fd)

    def __enter__(self) -> SourceDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TargetDevice:
    """A target opened for writing: a block device exclusively (O_EXCL: refused while anything
    has it open or mounted), or an image file, created sparse at ``size`` when it does not exist.
    ``fresh`` says the target is known to read as zeros (a new file), so zero runs need not be
    written. Writes and read-back go through ``io``: direct I/O where the kernel allows it
    (system/directio.py), buffered otherwise. Several threads may write at once (distinct
    ranges)."""

    def __init__(
        self,
        path: str,
        size: int | None = None,
        write_behind: int = 0,
        *,
        direct: bool | None = None,
    ) -> None:
        self.path = path
        self.fresh = False
        self.write_behind = write_behind  # start writeback after this many bytes; 0: never
        flags = os.O_RDWR | os.O_CLOEXEC
        block = is_block_device(path)
        if block:
            flags |= os.O_EXCL
        elif not os.path.exists(path):
            if size is None:
                raise DeviceError(f"{path}: no such target")
            flags |= os.O_CREAT | os.O_EXCL
            self.fresh = True
        try:
            self.fd = os.open(path, flags, 0o644)
        except OSError as exc:
            why = "it is in use (mounted or opened by another program)" if exc.errno == 16 else ""
            raise DeviceError(f"cannot open target {path}: {why or exc.strerror}") from exc
        if self.fresh and size is not None:
            os.ftruncate(self.fd, size)
        self.size = device_size(self.fd)
        self.block = block
        use_direct = direct_default() if direct is None else direct
        self.io = DirectFile(path, self.fd, os.O_RDWR, sector_sizes(self.fd)[0], direct=use_direct)
        self.unflushed = 0  # bytes written since writeback was last started, and where
        self.dirty_from, self.dirty_to = 1 << 63, 0
        self._lock = threading.Lock()

    def write_at(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        view = memoryview(data).cast("B")
        try:
            self.io.write(view, offset)
        except OSError as exc:
            raise DeviceError(
                f"write error on {self.path} in the {len(view)} bytes at byte {offset}:"
                f" {exc.strerror}"
            ) from exc
        if self.write_behind and not self.io.direct:  # what start_writeback will push out
            with self._lock:
                self.unflushed += len(view)
                self.dirty_from = min(self.dirty_from, offset)
                self.dirty_to = max(self.dirty_to, offset + len(view))
                due = self.unflushed >= self.write_behind
            if due:
                self.start_writeback()

    def zero(self, offset: int, length: int) -> None:
        """Make ``length`` bytes at ``offset`` read as zeros."""
        if self.fresh:
            return
        if not self.block:
            try:  # punch a hole: instant on files and keeps them sparse
                _punch_hole(self.fd, offset, length)
                return
            except OSError:
                pass
        try:
            self.io.write_zeros(offset, length)
        except OSError as exc:
            raise DeviceError(
                f"write error on {self.path} zeroing {length} bytes at byte {offset}:"
                f" {exc.strerror}"
            ) from exc

    def start_writeback(self) -> None:
        """Start writing what is dirty to the medium now, without waiting for it.

        The kernel otherwise holds written pages until a tenth of the memory is dirty (GBs on
        a technician's PC) or 30 s have passed, and the final fsync then waits for all of
        it while the network or the source sits idle. posix_fadvise(DONTNEED) starts
        writeback of the dirty pages (asynchronously) and drops the clean ones, which a
        target does not need. It pays when something else paces the writes (a multicast
        receiver waits for the network); for a clone or restore, whose source keeps the disk busy,
        alternating runs of a 2 GiB ext4 clone on our VM, with and without it every 32 MiB,
        differed by less than the VM's noise, so only receivers ask for it (``write_behind``)."""
        with self._lock:
            start, end = self.dirty_from, self.dirty_to
            self.unflushed, self.dirty_from, self.dirty_to = 0, 1 << 63, 0
        if end > start:
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise DeviceError(f"flushing {self.path} failed: {exc.strerror}") from exc

    def drop_range(self, offset: int, length: int) -> None:
        """Drop the clean cached pages of ``length`` bytes at ``offset`` (after a flush), so that
        a buffered read-back reads the medium, not the copy of what was written."""
        drop_cache(self.fd, offset, length)

    def read(self, length: int, offset: int) -> bytes:
        """``length`` bytes at ``offset``, read from the medium when the kernel allows direct
        reads (else possibly from the page cache: call ``drop_cache`` first)."""
        parts, got = [], 0
        while got < length:
            try:
                piece = self.io.read(min(length - got, 16 << 20), offset + got)
            except OSError as exc:
                raise DeviceError(
                    f"read error on {self.path} at byte {offset + got}: {exc.strerror}"
                ) from exc
            if not piece:
                raise DeviceError(f"{self.path}: short read at byte {offset + got}")
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def close(self) -> None:
        if self.fd >= 0:
            self.io.close()
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TargetDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) through libc."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    mode = 0x02 | 0x01
    res = libc.fallocate(
        ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_longlong(offset), ctypes.c_longlong(length)
    )
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
