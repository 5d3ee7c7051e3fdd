"""NTFS on-disk structures, declared once: boot sector, fixups, MFT records, attributes, runlists.

Everything on an NTFS volume is a file described by a record in the Master File Table ($MFT);
a record is a header followed by attributes ($FILE_NAME, $DATA, ...). Small attribute values live
inside the record ("resident"); large ones live in clusters listed by a runlist ("mapping pairs").
A file whose attributes do not fit one record gets an $ATTRIBUTE_LIST naming extension records.
Multi-sector structures (MFT records, index blocks, $LogFile restart pages) are protected by an
update sequence: the last two bytes of every 512-byte stride hold a check value whose real content
is kept in an array near the start; a torn write shows up as a mismatch.

Spec: the Linux-NTFS project's "NTFS Documentation" (R. Russon, Y. Fledel), sections "Boot
Sector", "FILE record", "Attributes", "Data runs", "$AttrDef" and "Fixup"; field names follow
ntfs-3g's include/ntfs-3g/layout.h. All functions here are pure: bytes in, dataclasses out, and
FilesystemError naming ``where`` (volume, structure, byte offset) for anything out of range.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from clonebay.errors import FilesystemError

OEM_ID = b"NTFS    "
FIXUP_STRIDE = 512  # the update sequence protects every 512 bytes, whatever the sector size
MAX_CLUSTER = 2 << 20  # Windows formats clusters of up to 2 MiB
MAX_RECORD = 64 << 10

# Attribute types ($AttrDef)
AT_STANDARD_INFORMATION = 0x10
AT_ATTRIBUTE_LIST = 0x20
AT_FILE_NAME = 0x30
AT_VOLUME_NAME = 0x60
AT_VOLUME_INFORMATION = 0x70
AT_DATA = 0x80
AT_INDEX_ROOT = 0x90
AT_INDEX_ALLOCATION = 0xA0
AT_BITMAP = 0xB0
AT_END = 0xFFFFFFFF

# Attribute flags
ATTR_COMPRESSED = 0x0001
ATTR_ENCRYPTED = 0x4000
ATTR_SPARSE = 0x8000

# MFT record flags
RECORD_IN_USE = 0x0001
RECORD_IS_DIRECTORY = 0x0002

# Boot sector (NTFS BPB), 0x54 bytes from offset 0; the 0x55AA marker ends the sector.
BOOT_SECTOR = struct.Struct("<3s8sHBHBHHBHHHIIIQQQb3xb3xQI")


class _BootFields(NamedTuple):
    jump: bytes
    oem_id: bytes
    bytes_per_sector: int  # 0x0B
    sectors_per_cluster: int  # 0x0D, > 128 means 2 ** (256 - value)
    reserved_sectors: int  # 0x0E, must be 0
    fats: int  # 0x10, must be 0
    root_entries: int  # 0x11, must be 0
    sectors16: int  # 0x13, must be 0
    media_type: int  # 0x15
    sectors_per_fat: int  # 0x16, must be 0
    sectors_per_track: int  # 0x18
    heads: int  # 0x1A
    hidden_sectors: int  # 0x1C
    large_sectors: int  # 0x20, must be 0
    drive: int  # 0x24
    total_sectors: int  # 0x28
    mft_lcn: int  # 0x30
    mftmirr_lcn: int  # 0x38
    clusters_per_mft_record: int  # 0x40, signed: < 0 means 2 ** -value bytes
    clusters_per_index_block: int  # 0x44
    serial: int  # 0x48
    checksum: int  # 0x50


@dataclass(frozen=True)
class BootSector:
    """The geometry an NTFS boot sector declares."""

    sector_size: int
    cluster_size: int
    total_sectors: int
    mft_lcn: int
    mftmirr_lcn: int
    record_size: int
    serial: int
    hidden_sectors: int

    @property
    def volume_bytes(self) -> int:
        """Bytes the volume spans up to (not including) the backup boot sector."""
        return self.total_sectors * self.sector_size

    @property
    def clusters(self) -> int:
        return self.volume_bytes // self.cluster_size


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _signed_size(value: int, cluster: int, what: str, where: str) -> int:
    """Decode the "clusters per record/index block" byte: > 0 clusters, < 0 a power of two."""
    if value > 0:
        size = value * cluster
    elif -31 <= value < 0:
        size = 1 << -value
    else:
        raise FilesystemError(f"{where}: {what} field is {value}")
    if not _power_of_two(size) or not FIXUP_STRIDE <= size <= MAX_RECORD:
        raise FilesystemError(f"{where}: {what} of {size} bytes is not supported")
    return size


def parse_boot(sector: bytes, where: str) -> BootSector:
    """Check and decode an NTFS boot sector (at least 512 bytes)."""
    if len(sector) < 512:
        raise FilesystemError(f"{where}: boot sector shorter than 512 bytes")
    f = _BootFields._make(BOOT_SECTOR.unpack_from(sector))
    if f.oem_id != OEM_ID:
        raise FilesystemError(f"{where}: OEM id {f.oem_id!r} is not {OEM_ID!r}")
    if sector[510:512] != b"\x55\xaa":
        raise FilesystemError(f"{where}: boot sector lacks the 0x55AA end marker")
    bps = f.bytes_per_sector
    if not _power_of_two(bps) or not 256 <= bps <= 4096:
        raise FilesystemError(f"{where}: {bps} bytes per sector is not supported")
    spc = f.sectors_per_cluster
    if spc > 128:  # large clusters: the byte is a negative power-of-two exponent
        exponent = 256 - spc
        if exponent > 21:
            raise FilesystemError(f"{where}: sectors per cluster byte {spc:#x} out of range")
        spc = 1 << exponent
    if not _power_of_two(spc):
        raise FilesystemError(f"{where}: {spc} sectors per cluster is not a power of two")
    cluster = bps * spc
    if cluster > MAX_CLUSTER:
        raise FilesystemError(f"{where}: cluster size {cluster} bytes is over 2 MiB")
    zeros = (f.reserved_sectors, f.fats, f.root_entries, f.sectors16, f.sectors_per_fat)
    if any(zeros) or f.large_sectors:
        raise FilesystemError(f"{where}: FAT fields that NTFS keeps zero are set")
    clusters = f.total_sectors * bps // cluster
    if clusters < 16:
        raise FilesystemError(f"{where}: volume of {f.total_sectors} sectors is too small")
    for name, lcn in (("$MFT", f.mft_lcn), ("$MFTMirr", f.mftmirr_lcn)):
        if lcn == 0 or lcn >= clusters:
            raise FilesystemError(
                f"{where}: {name} at cluster {lcn} lies outside the volume ({clusters} clusters)"
            )
    record = _signed_size(f.clusters_per_mft_record, cluster, "MFT record size", where)
    return BootSector(
        sector_size=bps,
        cluster_size=cluster,
        total_sectors=f.total_sectors,
        mft_lcn=f.mft_lcn,
        mftmirr_lcn=f.mftmirr_lcn,
        record_size=record,
        serial=f.serial,
        hidden_sectors=f.hidden_sectors,
    )


# Multi-sector header shared by FILE, INDX and RSTR structures: magic, usa offset, usa count.
MULTI_SECTOR_HEADER = struct.Struct("<4sHH")


def apply_fixups(buf: bytearray, magics: tuple[bytes, ...], where: str) -> bytes:
    """Check the update sequence of ``buf`` in place and restore the protected bytes.

    Returns the magic found. ``len(buf)`` must be the structure's full size (record, index block
    or restart page): a multiple of 512 with one check value per 512 bytes.
    """
    magic, usa_ofs, usa_count = MULTI_SECTOR_HEADER.unpack_from(buf)
    if magic not in magics:
        hint = " (marked bad by chkdsk)" if magic == b"BAAD" else ""
        raise FilesystemError(f"{where}: magic {magic!r}, expected {magics[0]!r}{hint}")
    strides = len(buf) // FIXUP_STRIDE
    if len(buf) % FIXUP_STRIDE or usa_count != strides + 1:
        raise FilesystemError(
            f"{where}: update sequence has {usa_count} entries for {len(buf)} bytes"
        )
    if usa_ofs % 2 or usa_ofs < MULTI_SECTOR_HEADER.size or usa_ofs + 2 * usa_count > 510:
        raise FilesystemError(f"{where}: update sequence offset {usa_ofs} is invalid")
    usn = bytes(buf[usa_ofs : usa_ofs + 2])
    for i in range(1, usa_count):
        end = i * FIXUP_STRIDE
        if buf[end - 2 : end] != usn:
            raise FilesystemError(
                f"{where}: update sequence mismatch at byte {end - 2}"
                f" ({bytes(buf[end - 2 : end]).hex()} != {usn.hex()}): torn or corrupt write"
            )
        buf[end - 2 : end] = buf[usa_ofs + 2 * i : usa_ofs + 2 * i + 2]
    return bytes(magic)


class Run(NamedTuple):
    """``length`` clusters of an attribute from ``vcn`` on, stored at ``lcn`` (None: sparse)."""

    vcn: int
    length: int
    lcn: int | None


def decode_runlist(data: bytes, lowest_vcn: int, where: str) -> tuple[Run, ...]:
    """Decode mapping pairs: a header byte (low nibble: length bytes, high nibble: offset
    bytes), the run length, then the LCN as a signed delta from the previous run's LCN
    (no offset bytes: a sparse run). A zero header byte ends the list."""
    runs: list[Run] = []
    pos = 0
    vcn = lowest_vcn
    lcn = 0
    while True:  # each pass consumes >= 2 bytes of ``data``, so this ends
        if pos >= len(data):
            raise FilesystemError(f"{where}: runlist is not terminated")
        header = data[pos]
        if header == 0:
            return tuple(runs)
        len_size, off_size = header & 0x0F, header >> 4
        if not 1 <= len_size <= 8 or off_size > 8 or pos + 1 + len_size + off_size > len(data):
            raise FilesystemError(f"{where}: runlist header byte {header:#04x} at {pos} invalid")
        start = pos + 1
        length = int.from_bytes(data[start : start + len_size], "little", signed=True)
        if length <= 0:
            raise FilesystemError(f"{where}: run of {length} clusters at VCN {vcn}")
        if off_size:
            delta = data[start + len_size : start + len_size + off_size]
            lcn += int.from_bytes(delta, "little", signed=True)
            if lcn < 0:
                raise FilesystemError(f"{where}: run at VCN {vcn} starts at negative LCN {lcn}")
            runs.append(Run(vcn, length, lcn))
        else:
            runs.append(Run(vcn, length, None))
        vcn += length
        pos = start + len_size + off_size


# Attribute record header: common part, then the resident or non-resident part at 0x10.
ATTR_HEADER = struct.Struct("<IIBBHHH")  # type, length, non_resident, name_length, name_offset,
#                                          flags, instance
ATTR_RESIDENT = struct.Struct("<IHBx")  # value_length, value_offset, resident_flags
ATTR_NONRESIDENT = struct.Struct("<qqHH4xqqq")  # lowest_vcn, highest_vcn, mapping_pairs_offset,
#                    compression_unit, allocated_size, data_size, initialized_size


class Attribute(NamedTuple):
    """One attribute record (one segment of a non-resident attribute split over records).

    A NamedTuple rather than a dataclass: whole-MFT walks build millions of them."""

    type: int
    name: str
    flags: int
    instance: int
    record: int  # MFT record holding this segment
    value: bytes | None = None  # resident value; None when non-resident
    lowest_vcn: int = 0
    highest_vcn: int = -1
    allocated_size: int = 0
    data_size: int = 0
    initialized_size: int = 0
    runs: tuple[Run, ...] = ()


def _at(where: str, atype: int, pos: int) -> str:
    """Error context, built only when raising (walks parse millions of attributes)."""
    return f"{where}, attribute {atype:#x} at {pos}"


def _parse_attribute(buf: bytes, pos: int, length: int, record: int, where: str) -> Attribute:
    atype, _, non_resident, name_len, name_ofs, flags, instance = ATTR_HEADER.unpack_from(buf, pos)
    name = ""
    if name_len:
        if name_ofs < ATTR_HEADER.size or name_ofs + 2 * name_len > length:
            raise FilesystemError(f"{_at(where, atype, pos)}: name lies outside the attribute")
        name = buf[pos + name_ofs : pos + name_ofs + 2 * name_len].decode("utf-16-le", "replace")
    if not non_resident:
        value_len, value_ofs, _ = ATTR_RESIDENT.unpack_from(buf, pos + 0x10)
        if value_ofs + value_len > length:
            raise FilesystemError(f"{_at(where, atype, pos)}: resident value runs past its end")
        value = bytes(buf[pos + value_ofs : pos + value_ofs + value_len])
        return Attribute(atype, name, flags, instance, record, value, data_size=value_len)
    if non_resident != 1 or length < 0x40:
        raise FilesystemError(f"{_at(where, atype, pos)}: non-resident header invalid")
    low, high, mp_ofs, _, allocated, data_size, initialized = ATTR_NONRESIDENT.unpack_from(
        buf, pos + 0x10
    )
    if low < 0 or high < low - 1 or not 0x40 <= mp_ofs < length:
        raise FilesystemError(
            f"{_at(where, atype, pos)}: VCN range {low}..{high} or runlist offset invalid"
        )
    if low == 0 and not 0 <= initialized <= data_size <= allocated:
        raise FilesystemError(
            f"{_at(where, atype, pos)}: sizes inconsistent (allocated {allocated},"
            f" data {data_size}, initialized {initialized})"
        )
    runs = decode_runlist(buf[pos + mp_ofs : pos + length], low, where)
    end_vcn = runs[-1].vcn + runs[-1].length if runs else low
    if end_vcn != high + 1:
        raise FilesystemError(
            f"{_at(where, atype, pos)}: runlist ends at VCN {end_vcn}, header says {high + 1}"
        )
    return Attribute(
        atype,
        name,
        flags,
        instance,
        record,
        None,
        low,
        high,
        allocated,
        data_size,
        initialized,
        runs,
    )


def parse_attributes(buf: bytes, start: int, end: int, record: int, where: str) -> list[Attribute]:
    """The attribute records in ``buf[start:end]`` up to the end marker."""
    attrs: list[Attribute] = []
    pos = start
    while True:  # ``pos`` grows by >= 24 bytes a pass and is bounded by ``end``
        if pos + 4 > end:
            raise FilesystemError(f"{where}: attributes run past the bytes in use ({end})")
        if struct.unpack_from("<I", buf, pos)[0] == AT_END:
            return attrs
        if pos + ATTR_HEADER.size > end:
            raise FilesystemError(f"{where}: attribute header at {pos} runs past {end}")
        length = struct.unpack_from("<I", buf, pos + 4)[0]
        if length < 0x18 or length % 8 or pos + length > end:
            raise FilesystemError(f"{where}: attribute at {pos} has invalid length {length}")
        attrs.append(_parse_attribute(buf, pos, length, record, where))
        pos += length


# FILE record header (NTFS 3.1: 48 bytes; the record number field is absent before 3.1).
RECORD_HEADER = struct.Struct("<4sHHQHHHHIIQHxxI")


class _RecordFields(NamedTuple):
    magic: bytes
    usa_ofs: int
    usa_count: int
    lsn: int
    sequence: int
    link_count: int
    attrs_offset: int
    flags: int
    bytes_in_use: int
    bytes_allocated: int
    base_ref: int
    next_attr_instance: int
    record_number: int


@dataclass(frozen=True)
class Record:
    """A fixed-up MFT record. ``base_ref`` is zero for a base record; an extension record
    holds its base record's reference (an extension of $MFT: record 0, sequence >= 1)."""

    number: int
    sequence: int
    flags: int
    base_ref: int
    attributes: tuple[Attribute, ...]

    @property
    def in_use(self) -> bool:
        return bool(self.flags & RECORD_IN_USE)

    @property
    def is_base(self) -> bool:
        return self.base_ref == 0

    @property
    def base(self) -> int:
        """The base record's number (meaningful for extension records)."""
        return ref_number(self.base_ref)


def ref_number(ref: int) -> int:
    """The record number of an MFT reference (low 48 bits; the top 16 are a sequence number)."""
    return ref & 0xFFFF_FFFF_FFFF


def parse_record(raw: bytes, number: int, where: str) -> Record:
    """Apply fixups to one MFT record and decode its header and attributes."""
    buf = bytearray(raw)
    apply_fixups(buf, (b"FILE",), where)
    f = _RecordFields._make(RECORD_HEADER.unpack_from(buf))
    size = len(buf)
    if f.bytes_allocated != size:
        raise FilesystemError(
            f"{where}: record says {f.bytes_allocated} bytes, the boot sector {size}"
        )
    if not f.usa_ofs + 2 * f.usa_count <= f.attrs_offset < f.bytes_in_use <= size:
        raise FilesystemError(
            f"{where}: attribute offset {f.attrs_offset} / bytes in use {f.bytes_in_use} invalid"
        )
    if f.attrs_offset % 8:
        raise FilesystemError(f"{where}: attribute offset {f.attrs_offset} is not 8-aligned")
    if f.usa_ofs >= RECORD_HEADER.size and f.record_number != number & 0xFFFF_FFFF:
        raise FilesystemError(f"{where}: record says it is number {f.record_number}")
    attrs = parse_attributes(bytes(buf), f.attrs_offset, f.bytes_in_use, number, where)
    return Record(number, f.sequence, f.flags, f.base_ref, tuple(attrs))
