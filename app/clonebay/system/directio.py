"""Direct I/O: reading and writing disks without the page cache, and falling back when refused.

Buffered I/O copies every byte through the page cache: on the VM clonebay is measured on that
costs ~2.5-3.5 s of kernel CPU per GiB (bench/RESULTS.md), and on any machine it evicts the
technician's cache and makes a read-back verify read memory unless the cache is dropped first.
With O_DIRECT the device reads into and writes from our own buffers: a 2 GiB file copy here took
0.3 s of system CPU instead of 2.7 s, at 545 MB/s with one 4 MiB transfer in flight and
783-811 MB/s with two to four (so callers keep two or more in flight).

O_DIRECT wants the offset, the length and the buffer's address aligned to the device's logical
block size (4096 for files: their filesystem's block). A ``DirectFile`` holds two descriptors of
one path: the direct one for the aligned body of each transfer, and the ordinary one for an
unaligned head or tail (a FAT cluster of 512 bytes, a file's last partial block) and as the
fallback when the kernel refuses O_DIRECT (tmpfs, some FUSE files: EINVAL), at open or on the
first transfer. Both see the same bytes: the kernel writes back and drops cached pages of a range
before a direct transfer touches it. Buffers that are not aligned in memory (bytes objects from a
decoder) are copied into an aligned bounce buffer of the calling thread (4 MiB, one per thread).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import threading

FILE_ALIGN = 4096  # a regular file's direct transfers: its filesystem's block size
BOUNCE = 4 << 20  # bytes per bounce buffer (one per thread that needs one)
_ZEROS = mmap.mmap(-1, BOUNCE)  # page-aligned zeros, never written: the source of zero writes


def close_quietly(fd: int) -> None:
    """Close ``fd`` even when the device behind it is gone: Linux frees the descriptor whatever
    close() returns, and an unplugged disk or a dead FUSE server (ENOTCONN) must not turn the
    job's own clear error into a traceback on the way out."""
    try:
        os.close(fd)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise


def direct_default() -> bool:
    """Direct I/O unless CLONEBAY_IO=buffered (a comparison, or a kernel that misbehaves)."""
    return os.environ.get("CLONEBAY_IO", "direct") != "buffered"


def address(view: memoryview) -> int | None:
    """The buffer's address, or None when it cannot be known (a read-only buffer)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return None


class DirectFile:
    """A path open twice: buffered (``fd``) and, when the kernel allows, direct (``dfd``)."""

    def __init__(self, path: str, fd: int, flags: int, sector: int, *, direct: bool = True) -> None:
        """``fd``: ``path`` already open with ``flags``; ``sector``: the device's logical sector
        size (a file's direct transfers align to FILE_ALIGN instead)."""
        self.path = path
        self.fd = fd
        self.dfd = -1
        mode = os.fstat(fd).st_mode
        self.align = sector if stat.S_ISBLK(mode) else FILE_ALIGN
        if direct and (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
            try:  # never O_EXCL or O_CREAT: ``fd`` already holds the claim and the file
                self.dfd = os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC)
            except OSError:
                self.dfd = -1
        self._local = threading.local()

    @property
    def direct(self) -> bool:
        return self.dfd >= 0

    def close(self) -> None:
        if self.dfd >= 0:
            dfd, self.dfd = self.dfd, -1
            close_quietly(dfd)

    def _refused(self) -> None:
        """The kernel refused a direct transfer (EINVAL): buffered from now on."""
        dfd, self.dfd = self.dfd, -1
        if dfd >= 0:
            os.close(dfd)

    def _bounce(self) -> mmap.mmap:
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = mmap.mmap(-1, BOUNCE)
        return buf

    def _split(self, offset: int, length: int) -> tuple[int, int]:
        """(head, body): unaligned bytes before the aligned body, and the body's length."""
        head = min(length, -offset % self.align)
        body = (length - head) // self.align * self.align
        return head, body

    # -- writes --------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (OSError from the kernel is raised as is)."""
        view = memoryview(data).cast("B")
        head, body = self._split(offset, len(view)) if self.direct else (len(view), 0)
        if head:
            _pwrite_all(self.fd, view[:head], offset)
        if body and not self._write_direct(view[head : head + body], offset + head):
            _pwrite_all(self.fd, view[head : head + body], offset + head)
        if head + body < len(view):
            _pwrite_all(self.fd, view[head + body :], offset + head + body)

    def write_zeros(self, offset: int, length: int) -> None:
        pos = offset
        while pos < offset + length:
            n = min(BOUNCE, offset + length - pos)
            self.write(memoryview(_ZEROS)[:n], pos)
            pos += n

    def _write_direct(self, view: memoryview, offset: int) -> bool:
        """Write the aligned ``view`` with O_DIRECT; False when the kernel refused it."""
        at = address(view)
        try:
            if at is not None and at % self.align == 0:
                _pwrite_all(self.dfd, view, offset)
                return True
            bounce = self._bounce()
            for pos in range(0, len(view), BOUNCE):
                n = min(BOUNCE, len(view) - pos)
                bounce[:n] = view[pos : pos + n]
                _pwrite_all(self.dfd, memoryview(bounce)[:n], offset + pos)
            return True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._refused()
            return False

    # -- reads ---------------------------------------------------------------------------------

    def read_into(self, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset``; returns the bytes read (fewer only at the end)."""
        view = view.cast("B")
        at = address(view)
        aligned = at is not None and at % self.align == 0
        head, body = self._split(offset, len(view)) if self.direct and aligned else (0, 0)
        if head:  # the body must start at an aligned address too: read it all buffered
            head, body = len(view), 0
        got = 0
        if body:
            got = self._read_direct(view[:body], offset)
            if got < 0:
                got = 0
            elif got < body:
                return got
        return got + pread_all(self.fd, view[got:], offset + got)

    def _read_direct(self, view: memoryview, offset: int) -> int:
        """Read the aligned ``view`` with O_DIRECT; -1 when the kernel refused it."""
        got = 0
        try:
            while got < len(view):
                n = os.preadv(self.dfd, [view[got:]], offset + got)
                if n == 0:
                    break
                got += n
                if got % self.align:  # a short read ends at the end of the device or file
                    break
        except OSError as exc:
            if exc.errno != errno.EINVAL or got:
                raise
            self._refused()
            return -1
        return got

    def read(self, length: int, offset: int) -> bytes:
        """``length`` bytes at ``offset`` from the medium (direct when possible: no cached copy
        of what was just written can answer); fewer only at the end."""
        if not self.direct:
            return os.pread(self.fd, length, offset)
        start = offset - offset % self.align
        end = -(-(offset + length) // self.align) * self.align
        out = bytearray()
        bounce = self._bounce()
        pos = start
        while pos < end:
            n = min(BOUNCE, end - pos)
            got = self._read_direct(memoryview(bounce)[:n], pos)
            if got < 0:
                return os.pread(self.fd, length, offset)
            lo = max(offset, pos) - pos
            hi = min(offset + length, pos + got) - pos
            if hi > lo:
                out += bounce[lo:hi]
            if got < n:
                break
            pos += n
        return bytes(out)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def pread_all(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` of ``fd``; the bytes read (fewer only at the end)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got
