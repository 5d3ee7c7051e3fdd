"""GPT header and entry layouts (UEFI spec 2.10, section 5.3), as pure parsers.

libparted reads GPT geometry, types and names, but does not expose the unique partition GUIDs,
the attribute bits or the disk GUID as clonebay needs them, so those are read here from the
primary header at LBA 1 and its entry array. Checksums (CRC32 of header and entries) are verified:
a GPT whose primary copy fails them is reported, not trusted.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from clonebay.errors import PartitionTableError

# Offset 0 of LBA 1. Fields: signature, revision, header size, header CRC32, reserved,
# my LBA, alternate LBA, first usable LBA, last usable LBA, disk GUID, entry array LBA,
# number of entries, size of one entry, entry array CRC32.
HEADER = struct.Struct("<8sIIII QQQQ 16s QIII")
SIGNATURE = b"EFI PART"
# One entry: type GUID, unique GUID, first LBA, last LBA (inclusive), attributes, UTF-16LE name.
ENTRY = struct.Struct("<16s16sQQQ72s")
MAX_ENTRY_ARRAY = 1 << 20  # 1 MiB: far above the 128 x 128 bytes every tool writes


@dataclass(frozen=True)
class GptEntry:
    index: int  # 1-based slot in the entry array (= partition number)
    type_guid: str
    unique_guid: str
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass(frozen=True)
class GptHeader:
    disk_guid: str
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int


def guid_text(raw: bytes) -> str:
    """A GUID as printed by sgdisk/blkid (mixed-endian fields, upper case)."""
    return str(uuid.UUID(bytes_le=raw)).upper()


def parse_header(sector: bytes, where: str) -> GptHeader:
    """Parse and check a GPT header sector; ``where`` names it in errors."""
    if len(sector) < HEADER.size or sector[:8] != SIGNATURE:
        raise PartitionTableError(f"{where}: no GPT header signature")
    fields = HEADER.unpack_from(sector)
    header_size = fields[2]
    if not HEADER.size <= header_size <= len(sector):
        raise PartitionTableError(f"{where}: GPT header size {header_size} is invalid")
    raw = bytearray(sector[:header_size])
    raw[16:20] = b"\0\0\0\0"
    if zlib.crc32(raw) != fields[3]:
        raise PartitionTableError(f"{where}: GPT header checksum mismatch")
    header = GptHeader(
        disk_guid=guid_text(fields[9]),
        my_lba=fields[5],
        alternate_lba=fields[6],
        first_usable_lba=fields[7],
        last_usable_lba=fields[8],
        entries_lba=fields[10],
        entry_count=fields[11],
        entry_size=fields[12],
        entries_crc=fields[13],
    )
    if header.entry_size < ENTRY.size or header.entry_size % 8:
        raise PartitionTableError(f"{where}: GPT entry size {header.entry_size} is invalid")
    if header.entry_count * header.entry_size > MAX_ENTRY_ARRAY:
        raise PartitionTableError(f"{where}: GPT entry array of {header.entry_count} is too big")
    return header


def parse_entries(header: GptHeader, array: bytes, where: str) -> list[GptEntry]:
    """The used entries of a GPT entry array, checked against the header's CRC32."""
    length = header.entry_count * header.entry_size
    if len(array) < length:
        raise PartitionTableError(f"{where}: GPT entry array is truncated")
    if zlib.crc32(array[:length]) != header.entries_crc:
        raise PartitionTableError(f"{where}: GPT entry array checksum mismatch")
    entries = []
    for i in range(header.entry_count):
        type_raw, unique_raw, first, last, attrs, name_raw = ENTRY.unpack_from(
            array, i * header.entry_size
        )
        if type_raw == bytes(16):
            continue
        name = name_raw.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        entries.append(
            GptEntry(i + 1, guid_text(type_raw), guid_text(unique_raw), first, last, attrs, name)
        )
    return entries
