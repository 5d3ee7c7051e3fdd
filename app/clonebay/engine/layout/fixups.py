"""What must change on a target after partitions moved or grew.

- Hidden sectors: NTFS and FAT boot sectors record the partition's start sector at offset 0x1C
  (BPB "hidden sectors"); Windows' boot code uses it to find the volume. When a partition starts
  somewhere else on the target, the field is patched in the boot sector and in its backup (NTFS:
  the last sector of the volume; FAT32: the sector BPB_BkBootSec names).
- Filesystem growth: ext2/3/4 with ``e2fsck -fy`` then ``resize2fs``, NTFS with ``ntfsresize``, on a
  loop device over the target partition's new extent (these tools take a device, not an offset).
  FAT is not grown: fatresize (1.1.0, Debian 12) aborts on loop devices and on disks alike here, so
  the plan keeps FAT partitions at their size.
- The GPT backup header at the new end of the disk is written by writing the table (sfdisk).

Everything here writes only to the target, after the data and before the final verify of the
table. Tools run through system/run.py.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from clonebay.engine.layout.plan import Move
from clonebay.errors import CommandError, DeviceError
from clonebay.system import loopdev
from clonebay.system.blockdev import TargetDevice
from clonebay.system.run import run

HIDDEN_SECTORS = 0x1C  # u32 in the BPB of NTFS and FAT boot sectors
NTFS_TOTAL_SECTORS = 0x28  # u64
FAT32_BACKUP_SECTOR = 0x32  # u16 BPB_BkBootSec
HIDDEN_SECTOR_FS = frozenset({"ntfs", "fat12", "fat16", "fat32"})  # BPBs that record their start


def _patch_u32(dev: TargetDevice, at: int, value: int) -> None:
    dev.write_at(struct.pack("<I", value), at)


def boot_sector_copies(boot: bytes, fstype: str) -> list[int]:
    """Byte offsets (in the volume) of the boot sector and its backups."""
    bps = struct.unpack_from("<H", boot, 0x0B)[0]
    if fstype == "ntfs":
        total = struct.unpack_from("<Q", boot, NTFS_TOTAL_SECTORS)[0]
        return [0, total * bps]
    if fstype == "fat32":
        backup = struct.unpack_from("<H", boot, FAT32_BACKUP_SECTOR)[0]
        return [0, backup * bps] if backup else [0]
    return [0]


def patch_hidden_sectors(dev: TargetDevice, move: Move, sector_size: int) -> None:
    """Write the new start sector into every boot sector copy of the moved volume."""
    fstype = move.volume.fstype if move.volume else ""
    patch_hidden_sectors_at(
        dev, move.target_start, move.target_size, fstype, move.target_start // sector_size
    )


def patch_hidden_sectors_at(
    dev: TargetDevice, start: int, size: int, fstype: str, value: int
) -> None:
    """Write ``value`` into the hidden-sectors field of every boot sector copy of the volume at
    byte ``start`` of the target (``size`` bytes long)."""
    boot = _read(dev, start, 512)
    for offset in boot_sector_copies(boot, fstype):
        if offset + 512 <= size:
            _patch_u32(dev, start + offset + HIDDEN_SECTORS, value)


def _read(dev: TargetDevice, at: int, length: int) -> bytes:
    try:
        data = os.pread(dev.fd, length, at)
    except OSError as exc:
        raise DeviceError(f"read error on {dev.path} at byte {at}: {exc.strerror}") from exc
    if len(data) != length:
        raise DeviceError(f"{dev.path}: short read at byte {at}")
    return data


@contextmanager
def partition_loop(target: str, start: int, size: int) -> Iterator[str]:
    """A loop device over ``size`` bytes at ``start`` of ``target``; detached afterwards."""
    dev = loopdev.attach(target, offset=start, size=size)
    try:
        yield dev
    finally:
        loopdev.detach(dev)


def grow_filesystem(target: str, move: Move) -> str:
    """Grow the moved volume's filesystem to fill its new partition; returns what was done."""
    fstype = move.volume.fstype if move.volume else ""
    with partition_loop(target, move.target_start, move.target_size) as dev:
        try:
            if fstype.startswith("ext"):
                run(["e2fsck", "-f", "-y", dev], ok_codes=(0, 1))
                run(["resize2fs", dev])
            elif fstype == "ntfs":
                run(["ntfsresize", "--force", "--no-progress-bar", dev])
            else:
                return f"{move.name}: {fstype} is not grown"
        except CommandError as exc:
            raise DeviceError(
                f"growing {fstype} on partition {move.number} of {target} failed; the data is"
                f" copied, the filesystem keeps its old size: {exc}"
            ) from exc
    return f"{move.name}: {fstype} grown to fill {move.target_size} bytes"
