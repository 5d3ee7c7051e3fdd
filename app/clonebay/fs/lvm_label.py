"""The label of an LVM2 physical volume: what makes a partition a PV, and where its areas are.

LVM2 writes one 512-byte label into one of the device's first four sectors (sector 1, byte 512,
unless ``pvcreate --labelsector`` said otherwise). Layout as in lvm2's lib/label/label.h
(``struct label_header``) and lib/format_text/layout.h (``struct pv_header``), little-endian:

label header, at the start of the sector::

    id[8] "LABELONE" | sector_xl u64 (this sector's number) | crc_xl u32 | offset_xl u32 | type[8]

``crc_xl`` covers the sector from the end of the crc field (byte 20) to byte 512;
``offset_xl`` is where the PV header starts inside the sector (32); ``type`` is "LVM2 001".

PV header, at ``offset_xl``::

    pv_uuid[32] (ASCII, no dashes) | device_size_xl u64 (bytes)
    disk_locn data areas[]     { offset u64, size u64 } ... until { 0, 0 }
    disk_locn metadata areas[] { offset u64, size u64 } ... until { 0, 0 }
    pv_header_extension        { version u32, flags u32, bootloader areas[] until { 0, 0 } }

The data area is where the physical extents start (its offset is ``pe_start``; size 0 means "to
the end"). Each metadata area holds the volume group's text metadata (lvm_text). Offsets are
bytes from the start of the PV. The extension only exists since version 2.02.110 (2014).

LVM's checksum (lib/misc/crc.c ``calc_crc``) is the reflected CRC-32 of zlib (polynomial
0xEDB88320) without the final inversion and with its own initial value 0xf597a6cf.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass

from clonebay.errors import FilesystemError
from clonebay.model import Extent

SECTOR = 512
LABEL_SCAN_SECTORS = 4  # LABEL_SCAN_SECTORS in lib/label/label.h
LABEL_ID = b"LABELONE"
LVM2_TYPE = b"LVM2 001"
INITIAL_CRC = 0xF597A6CF
LABEL_HEADER = struct.Struct("<8sQII8s")  # id, sector_xl, crc_xl, offset_xl, type
CRC_FROM = 20  # the crc covers the label sector from offset_xl's field onwards
DISK_LOCN = struct.Struct("<QQ")  # offset, size (bytes)
UUID_LEN = 32
MAX_AREAS = 8  # lvm2 writes 1 data area and at most 2 metadata areas; more is a damaged label


class LvmError(FilesystemError):
    """An LVM physical volume's label or metadata is damaged, truncated or of a kind clonebay
    does not map. The volume is still copied whole (raw)."""

    title = "LVM metadata not understood"


def lvm_crc(data: bytes, initial: int = INITIAL_CRC) -> int:
    """lvm2's ``calc_crc(initial, data)``: zlib's CRC-32 register without the inversions."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def format_uuid(raw: str) -> str:
    """LVM's 32-character id as its tools print it: 6-4-4-4-4-4-6 characters, dashed."""
    cuts = (0, 6, 10, 14, 18, 22, 26, 32)
    return "-".join(raw[a:b] for a, b in itertools.pairwise(cuts))


@dataclass(frozen=True)
class PvLabel:
    """What a PV's label says: its id, size, where extents start and where metadata lives."""

    sector: int  # the label's sector number (0..3)
    uuid: str  # dashed, as pvs prints it
    device_size: int  # bytes, as recorded by pvcreate/pvresize
    data_areas: tuple[Extent, ...]  # length 0: to the end of the device
    metadata_areas: tuple[Extent, ...]
    bootloader_areas: tuple[Extent, ...] = ()


def is_label(sector: bytes) -> bool:
    """``LABELONE`` and ``LVM2 001`` at their places in a 512-byte sector."""
    return sector[:8] == LABEL_ID and sector[24:32] == LVM2_TYPE


def find_label(head: bytes) -> int | None:
    """The sector number (0..3) of the first LVM2 label in ``head``, or None."""
    for number in range(LABEL_SCAN_SECTORS):
        at = number * SECTOR
        if is_label(head[at : at + SECTOR]):
            return number
    return None


def _areas(sector: bytes, pos: int, what: str) -> tuple[tuple[Extent, ...], int]:
    """A zero-terminated disk_locn list from ``pos``: (areas, position after the terminator)."""
    found: list[Extent] = []
    while True:
        if pos + DISK_LOCN.size > SECTOR:
            raise LvmError(f"LVM label: its list of {what} areas runs past the label sector")
        offset, size = DISK_LOCN.unpack_from(sector, pos)
        pos += DISK_LOCN.size
        if offset == 0:
            return tuple(found), pos
        if len(found) == MAX_AREAS:
            raise LvmError(f"LVM label: more than {MAX_AREAS} {what} areas (damaged label)")
        found.append(Extent(offset, size))


def parse_label(sector: bytes, number: int) -> PvLabel:
    """Parse the 512-byte label sector ``number``; LvmError when it is not a sound LVM2 label."""
    if len(sector) < SECTOR or not is_label(sector):
        raise LvmError(f"LVM label: no LABELONE/LVM2 001 label in sector {number}")
    _id, sector_xl, crc, offset, _type = LABEL_HEADER.unpack_from(sector)
    if sector_xl != number:
        raise LvmError(f"LVM label in sector {number} says it is in sector {sector_xl}")
    if lvm_crc(sector[CRC_FROM:SECTOR]) != crc:
        raise LvmError(f"LVM label in sector {number}: checksum mismatch (damaged label)")
    if not LABEL_HEADER.size <= offset <= SECTOR - UUID_LEN - 8 - 2 * DISK_LOCN.size:
        raise LvmError(f"LVM label in sector {number}: PV header offset {offset} is impossible")
    raw_uuid = sector[offset : offset + UUID_LEN]
    if not raw_uuid.isascii() or not raw_uuid.isalnum():
        raise LvmError(f"LVM label in sector {number}: the PV id is not 32 letters and digits")
    (device_size,) = struct.unpack_from("<Q", sector, offset + UUID_LEN)
    data, pos = _areas(sector, offset + UUID_LEN + 8, "data")
    metadata, pos = _areas(sector, pos, "metadata")
    boot: tuple[Extent, ...] = ()
    if pos + 8 <= SECTOR and struct.unpack_from("<I", sector, pos)[0] >= 1:
        boot, _ = _areas(sector, pos + 8, "bootloader")
    if len(data) != 1:
        raise LvmError(f"LVM label: {len(data)} data areas (lvm2 writes exactly one)")
    return PvLabel(number, format_uuid(raw_uuid.decode()), device_size, data, metadata, boot)
