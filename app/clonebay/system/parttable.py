"""Partition tables <-> clonebay.model.PartitionTable; the only module that imports pyparted.

libparted reads MBR (with the chain of extended boot records behind an extended partition) and
GPT, and gives geometry, types, names and flags. What it does not expose (the MBR disk signature,
GPT disk and partition GUIDs, GPT attribute bits) is read directly from the disk's first sectors
(system/gpt.py). libparted's questions ("fix the backup GPT?") are always answered "ignore": reading
a table must never change the disk.
"""

from __future__ import annotations

import logging
import os
import struct

import _ped
import parted

from clonebay.errors import PartitionTableError
from clonebay.model import Partition, PartitionTable
from clonebay.system import gpt, mbr
from clonebay.system.blockdev import FileSource

log = logging.getLogger(__name__)

MBR_SIGNATURE_OFFSET = 440  # 4-byte disk signature in the MBR (after 440 bytes of boot code)
_warnings: list[str] = []


def _answer(kind: int, options: int, message: str) -> int:
    """libparted exception handler: record the message, never let libparted "fix" anything."""
    _warnings.append(message)
    log.debug("libparted: %s", message)
    if options in (_ped.EXCEPTION_OPT_IGNORE_CANCEL, _ped.EXCEPTION_OPT_RETRY_IGNORE_CANCEL):
        return int(_ped.EXCEPTION_RESOLVE_IGNORE)
    if options in (_ped.EXCEPTION_OPT_YES_NO, _ped.EXCEPTION_OPT_YES_NO_CANCEL):
        return int(_ped.EXCEPTION_RESOLVE_NO)
    return int(_ped.EXCEPTION_RESOLVE_CANCEL)


def _flags(part: parted.Partition) -> tuple[str, ...]:
    text = part.getFlagsAsString()
    return tuple(f.strip() for f in text.split(",") if f.strip())


def _mbr_kind(part: parted.Partition) -> str:
    if part.type & parted.PARTITION_EXTENDED:
        return "extended"
    if part.type & parted.PARTITION_LOGICAL:
        return "logical"
    return "primary"


def read_table(path: str) -> PartitionTable:
    """Read the partition table of a disk or disk image file at ``path``.

    A device with no recognised label gives kind "none" and no partitions (a filesystem may
    sit on the whole device; the prober looks at it as one volume).
    """
    if not os.path.exists(path):
        raise PartitionTableError(f"{path}: no such disk or image file")
    _warnings.clear()
    parted.register_exn_handler(_answer)
    try:
        device = parted.getDevice(path)
    except parted.IOException as exc:
        parted.clear_exn_handler()  # pyparted frees a handler that is registered twice
        raise PartitionTableError(f"{path}: cannot open: {exc}") from exc
    try:
        sector = int(device.sectorSize)
        size = int(device.length) * sector
        try:
            disk = parted.newDisk(device)
        except (parted.PartedException, _ped.DiskLabelException, _ped.DiskException) as exc:
            said = " ".join(_warnings) or str(exc)
            if "unrecognised disk label" in said or not said.strip():
                return PartitionTable("none", sector, size, ())
            raise PartitionTableError(
                f"{path}: partition table not readable: {_plain(said)} (nothing was changed;"
                " clonebay does not guess: check the table with gdisk or fdisk first)"
            ) from exc
        if disk.type == "loop":  # libparted's name for "a filesystem on the whole device"
            return PartitionTable("none", sector, size, ())
        if disk.type == "gpt":
            return _gpt_table(path, disk, sector, size)
        if disk.type == "msdos":
            return _mbr_table(path, disk, sector, size)
        raise PartitionTableError(f"{path}: partition table type {disk.type!r} is not supported")
    finally:
        device.removeFromCache()
        parted.clear_exn_handler()


def _mbr_table(path: str, disk: parted.Disk, sector: int, size: int) -> PartitionTable:
    with FileSource(path) as src:
        signature = struct.unpack_from("<I", src.pread(4, MBR_SIGNATURE_OFFSET))[0]
        try:
            entries = {e.number: e for e in mbr.read_all(lambda lba: src.pread(512, lba * sector))}
        except PartitionTableError as exc:
            raise PartitionTableError(f"{path}: {exc}") from exc
    parts = []
    for part in disk.partitions:
        geom = part.geometry
        entry = entries.get(int(part.number))
        if entry is None or entry.start_lba != geom.start:
            raise PartitionTableError(
                f"{path}: MBR entry {part.number} disagrees with libparted's reading"
            )
        parts.append(
            Partition(
                number=int(part.number),
                start=int(geom.start) * sector,
                size=int(geom.length) * sector,
                kind=_mbr_kind(part),
                type_id=f"0x{entry.type_id:02x}",
                flags=_flags(part),
            )
        )
    return PartitionTable(
        "msdos", sector, size, tuple(sorted(parts, key=lambda p: p.number)), f"0x{signature:08x}"
    )


def _plain(said: str) -> str:
    """libparted's words, without the promise it makes when the caller would let it repair the
    table ("so that will be used"): clonebay answers "cancel", so nothing is used or fixed."""
    if "backup GPT table is corrupt" in said:
        return (
            "the backup GPT (at the end of the disk) is missing or corrupt; the primary looks"
            " intact, but clonebay does not copy a disk whose two GPT copies disagree"
        )
    return said


def _gpt_table(path: str, disk: parted.Disk, sector: int, size: int) -> PartitionTable:
    with FileSource(path) as src:
        where = f"{path}: primary GPT header (LBA 1)"
        header = gpt.parse_header(src.pread(sector, sector), where)
        array_len = header.entry_count * header.entry_size
        array_at = header.entries_lba * sector
        if array_at + array_len > src.size:
            raise PartitionTableError(f"{path}: GPT entry array lies past the end of the disk")
        entries = {
            e.index: e for e in gpt.parse_entries(header, src.pread(array_len, array_at), where)
        }
    parts = []
    for part in disk.partitions:
        geom = part.geometry
        entry = entries.get(int(part.number))
        if entry is None or entry.first_lba != geom.start:
            raise PartitionTableError(
                f"{path}: GPT entry {part.number} disagrees with libparted's reading"
            )
        parts.append(
            Partition(
                number=int(part.number),
                start=int(geom.start) * sector,
                size=int(geom.length) * sector,
                type_id=entry.type_guid,
                name=entry.name,
                guid=entry.unique_guid,
                flags=_flags(part),
                attributes=entry.attributes,
            )
        )
    return PartitionTable(
        "gpt",
        sector,
        size,
        tuple(sorted(parts, key=lambda p: p.number)),
        header.disk_guid,
        first_usable=header.first_usable_lba * sector,
        last_usable=(header.last_usable_lba + 1) * sector,
    )


def last_warnings() -> tuple[str, ...]:
    """Messages libparted raised while reading the last table (e.g. a misplaced backup GPT)."""
    return tuple(_warnings)
