"""MBR and EBR layouts (the IBM PC partition table), as pure parsers.

The MBR's last 66 bytes hold four 16-byte entries and the 0x55AA mark; bytes 0-439 are boot code
and 440-443 the disk signature Windows uses to find its boot disk. An extended partition (type
0x05, 0x0F or 0x85) holds a chain of extended boot records: each EBR's first entry is a logical
partition (start relative to that EBR), its second points at the next EBR (start relative to the
extended partition). libparted walks the same chain; this module adds the type bytes, which the
libparted build on Debian 12 does not expose through pyparted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from clonebay.errors import PartitionTableError

# status, CHS first (3 bytes), type, CHS last (3 bytes), LBA first, sector count
ENTRY = struct.Struct("<B3sB3sII")
TABLE_OFFSET = 446
BOOT_MARK = b"\x55\xaa"
EXTENDED_TYPES = (0x05, 0x0F, 0x85)
MAX_LOGICAL = 128  # a chain longer than this is a loop or garbage


@dataclass(frozen=True)
class MbrEntry:
    number: int  # 1-4 primary, 5.. logical
    type_id: int
    start_lba: int
    sectors: int
    bootable: bool


def parse_entries(sector: bytes) -> list[MbrEntry]:
    """The four primary entries of an MBR (or EBR) sector, empty slots included as type 0."""
    if len(sector) < 512 or sector[510:512] != BOOT_MARK:
        raise PartitionTableError("MBR/EBR sector has no 0x55AA boot mark")
    out = []
    for i in range(4):
        status, _, type_id, _, lba, count = ENTRY.unpack_from(sector, TABLE_OFFSET + 16 * i)
        out.append(MbrEntry(i + 1, type_id, lba, count, status == 0x80))
    return out


def read_all(read_sector: Callable[[int], bytes]) -> list[MbrEntry]:
    """Primary entries then logical ones, following the EBR chain; ``read_sector(lba)``."""
    primaries = [e for e in parse_entries(read_sector(0)) if e.type_id]
    entries = list(primaries)
    extended = next((e for e in primaries if e.type_id in EXTENDED_TYPES), None)
    if extended is None:
        return entries
    ebr = extended.start_lba
    seen: set[int] = set()
    number = 5
    while ebr and len(seen) < MAX_LOGICAL:
        if ebr in seen:
            raise PartitionTableError(f"EBR chain loops back to sector {ebr}")
        seen.add(ebr)
        first, link, *_ = parse_entries(read_sector(ebr))
        if first.type_id:
            entries.append(
                MbrEntry(
                    number, first.type_id, ebr + first.start_lba, first.sectors, first.bootable
                )
            )
            number += 1
        ebr = extended.start_lba + link.start_lba if link.type_id else 0
    return entries
