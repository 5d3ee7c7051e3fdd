"""SCSI tape drives: discovery from sysfs, and writing an image stream onto a tape.

A tape drive is not a disk: it cannot be cloned to or probed, but it is a fine target for the
single-stream image form (``clonebay save /dev/sda /dev/nst0``), the way Ghost and Clonezilla
users keep images on LTO. The kernel's st driver gives each drive a family of character devices
under /sys/class/scsi_tape: ``stN`` rewinds on close, ``nstN`` does not (so several images can
follow one another on a tape, separated by filemarks), and the ``l``, ``m``, ``a`` suffixes are
alternative modes. clonebay offers the non-rewinding ``nstN``; ``stN`` is shown beside it.

Records: st in variable-block mode turns each write() into one tape block, and a write larger
than the driver's buffer fails (EINVAL or ENOMEM). ``TapeStream`` therefore puts the drive in
variable-block mode (MTSETBLK 0, the usual mode of LTO drives) and cuts the stream into 64 KiB
records (tar's -b 128), the last one shorter: no padding, so what is read back is exactly the
stream, whose trailer ends it. Restore reads the tape with the same record size:
``dd if=/dev/nst0 bs=64k | clonebay restore - DISK``.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from clonebay.errors import DeviceError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

SYS_CLASS_TAPE = Path("/sys/class/scsi_tape")
RECORD_SIZE = 64 * 1024
# <linux/mtio.h>: struct mtop { short mt_op; int mt_count; } and _IOW('m', 1, struct mtop)
MTOP_FORMAT = "hi"
MTIOCTOP = 0x40000000 | (struct.calcsize(MTOP_FORMAT) << 16) | (ord("m") << 8) | 1
MTSETBLK = 20
SCSI_TAPE_MAJOR = 9  # Documentation/admin-guide/devices.txt: st and nst
log = logging.getLogger(__name__)
_NO_REWIND = re.compile(r"nst(\d+)")


@dataclass(frozen=True)
class TapeDrive:
    """One SCSI tape drive: its no-rewind device (the stream target) and what the drive says."""

    path: str  # /dev/nst0
    rewind_path: str  # /dev/st0
    vendor: str = ""
    model: str = ""
    serial: str = ""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _serial(device_dir: Path) -> str:
    """Unit serial number from the VPD page 0x80 (SPC-4 7.8.15), as udev reads it for disks."""
    try:
        data = (device_dir / "vpd_pg80").read_bytes()
    except OSError:
        return ""
    if len(data) < 4 or data[1] != 0x80:
        return ""
    raw = data[4 : 4 + int.from_bytes(data[2:4], "big")].rstrip(b"\0 ")
    return raw.decode("ascii", errors="replace").strip()


def list_tapes(sys_class: Path = SYS_CLASS_TAPE) -> list[TapeDrive]:
    """Every SCSI tape drive, in drive number order; [] without the st driver or drives."""
    try:
        names = [entry.name for entry in sys_class.iterdir()]
    except OSError:
        return []
    drives: list[tuple[int, TapeDrive]] = []
    for name in names:
        match = _NO_REWIND.fullmatch(name)
        if match is None:
            continue
        device_dir = sys_class / name / "device"
        drives.append(
            (
                int(match.group(1)),
                TapeDrive(
                    path=f"/dev/{name}",
                    rewind_path=f"/dev/st{match.group(1)}",
                    vendor=_read(device_dir / "vendor"),
                    model=_read(device_dir / "model"),
                    serial=_serial(device_dir),
                ),
            )
        )
    return [drive for _, drive in sorted(drives, key=lambda item: item[0])]


def is_stream_device(path: str) -> bool:
    """Whether ``path`` is a character device (a tape, a FIFO-like device): a stream target."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def set_variable_blocks(fd: int) -> bool:
    """Put a tape drive in variable-block mode (MTIOCTOP with MTSETBLK 0, <linux/mtio.h>).
    False when ``fd`` is not a SCSI tape or the drive refuses: then it keeps its mode."""
    try:
        if os.major(os.fstat(fd).st_rdev) != SCSI_TAPE_MAJOR:
            return False  # another character device: its ioctl numbers mean other things
        fcntl.ioctl(fd, MTIOCTOP, struct.pack(MTOP_FORMAT, MTSETBLK, 0))
    except OSError:
        return False
    return True


class TapeStream(io.RawIOBase):
    """A write-only stream that hands the device ``record``-byte records (see above)."""

    def __init__(self, path: str, record: int = RECORD_SIZE) -> None:
        super().__init__()
        self._path = path
        self._record = record
        self._pending = bytearray()
        try:
            self._fd = os.open(path, os.O_WRONLY)
        except OSError as exc:
            raise DeviceError(f"cannot open {path} for writing: {exc.strerror}") from exc
        set_variable_blocks(self._fd)

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        self._pending += view
        whole = len(self._pending) - len(self._pending) % self._record
        if whole:
            self._write_all(memoryview(self._pending)[:whole])
            del self._pending[:whole]
        return len(view)

    def _write_all(self, data: memoryview) -> None:
        for start in range(0, len(data), self._record):
            piece = data[start : start + self._record]
            try:
                written = os.write(self._fd, piece)
            except OSError as exc:
                raise DeviceError(f"writing to {self._path} failed: {exc.strerror}") from exc
            if written != len(piece):
                raise DeviceError(f"{self._path}: short write ({written} of {len(piece)} bytes)")

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._pending:
                self._write_all(memoryview(self._pending))  # the last, shorter record
                self._pending.clear()
        finally:
            fd, self._fd = self._fd, -1
            super().close()
            try:
                os.close(fd)  # st writes a filemark when a written device is closed
            except OSError as exc:
                # Every record is on the tape and the stream ends with its own trailer, so a
                # missing filemark only matters for `mt fsf`: a warning, not a failed save.
                log.warning("%s: the closing filemark was not written: %s", self._path, exc)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
