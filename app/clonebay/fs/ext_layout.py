"""On-disk structures of ext2/3/4: the superblock, group descriptors, feature flags, checksums.

Everything here is a pure function of bytes. Offsets and names follow the kernel's
``fs/ext4/ext4.h`` and the ext4 disk layout document
(https://www.kernel.org/doc/html/latest/filesystems/ext4/globals.html); all fields are
little-endian. Only the fields clonebay needs are unpacked; each layout is declared once as a
table of ``(offset, struct code, name)`` from which both the ``struct.Struct`` (with padding for
the gaps) and the named tuple are built, and the two are checked against each other at import.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
MAGIC = 0xEF53
MAGIC_OFFSET = SUPERBLOCK_OFFSET + 0x38

# s_state
STATE_VALID = 0x0001
STATE_ERROR = 0x0002
STATE_ORPHANS = 0x0004

# s_feature_compat: unknown bits here are harmless by definition (the kernel mounts anyway).
COMPAT_HAS_JOURNAL = 0x0004
COMPAT_RESIZE_INODE = 0x0010
COMPAT_SPARSE_SUPER2 = 0x0200
COMPAT_FAST_COMMIT = 0x0400

# s_feature_incompat: every bit we accept is listed; any other bit -> FilesystemError.
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_RECOVER = 0x0004
INCOMPAT_JOURNAL_DEV = 0x0008
INCOMPAT_META_BG = 0x0010
INCOMPAT_EXTENTS = 0x0040
INCOMPAT_64BIT = 0x0080
INCOMPAT_MMP = 0x0100  # the MMP block is allocated in the block bitmap
INCOMPAT_FLEX_BG = 0x0200
INCOMPAT_EA_INODE = 0x0400
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000
INCOMPAT_CASEFOLD = 0x20000
INCOMPAT_SUPPORTED = (
    INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD
)

# s_feature_ro_compat: none of the accepted bits changes what the block bitmaps mean.
# Refused: HAS_SNAPSHOT (0x80, next3 snapshots keep blocks in an exclude bitmap), REPLICA
# (0x800) and SHARED_BLOCKS (0x4000), and anything newer than this list.
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_LARGE_FILE = 0x0002
RO_COMPAT_BTREE_DIR = 0x0004
RO_COMPAT_HUGE_FILE = 0x0008
RO_COMPAT_GDT_CSUM = 0x0010
RO_COMPAT_DIR_NLINK = 0x0020
RO_COMPAT_EXTRA_ISIZE = 0x0040
RO_COMPAT_QUOTA = 0x0100
RO_COMPAT_BIGALLOC = 0x0200
RO_COMPAT_METADATA_CSUM = 0x0400
RO_COMPAT_READONLY = 0x1000
RO_COMPAT_PROJECT = 0x2000
RO_COMPAT_VERITY = 0x8000
RO_COMPAT_ORPHAN_PRESENT = 0x10000
RO_COMPAT_SUPPORTED = (
    RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_BTREE_DIR
    | RO_COMPAT_HUGE_FILE
    | RO_COMPAT_GDT_CSUM
    | RO_COMPAT_DIR_NLINK
    | RO_COMPAT_EXTRA_ISIZE
    | RO_COMPAT_QUOTA
    | RO_COMPAT_BIGALLOC
    | RO_COMPAT_METADATA_CSUM
    | RO_COMPAT_READONLY
    | RO_COMPAT_PROJECT
    | RO_COMPAT_VERITY
    | RO_COMPAT_ORPHAN_PRESENT
)

# What ext3 already understood (as blkid decides ext2/ext3 vs ext4): anything else is ext4-only.
EXT3_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG
EXT3_RO_COMPAT = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR

# bg_flags
BG_INODE_UNINIT = 0x0001
BG_BLOCK_UNINIT = 0x0002

CHECKSUM_TYPE_CRC32C = 1
SUPERBLOCK_CHECKSUM_OFFSET = 0x3FC


def make_layout(
    fields: tuple[tuple[int, str, str], ...], size: int, order: str = "<"
) -> struct.Struct:
    """A Struct for ``fields`` (sorted by offset) with pad bytes in the gaps; ``order`` "<"/">"."""
    fmt = order
    pos = 0
    for offset, code, _name in fields:
        if offset < pos:
            raise ValueError(f"layout field at {offset:#x} overlaps the previous one")
        fmt += f"{offset - pos}x" if offset > pos else ""
        fmt += code
        pos = offset + struct.calcsize(order + code)
    fmt += f"{size - pos}x" if size > pos else ""
    layout = struct.Struct(fmt)
    if layout.size != size:
        raise ValueError(f"layout is {layout.size} bytes, expected {size}")
    return layout


class Superblock(NamedTuple):
    """The fields of ``struct ext4_super_block`` that clonebay uses (names without ``s_``)."""

    inodes_count: int
    blocks_count_lo: int
    first_data_block: int
    log_block_size: int
    log_cluster_size: int
    blocks_per_group: int
    clusters_per_group: int
    inodes_per_group: int
    magic: int
    state: int
    rev_level: int
    first_ino: int
    inode_size: int
    feature_compat: int
    feature_incompat: int
    feature_ro_compat: int
    uuid: bytes
    volume_name: bytes
    reserved_gdt_blocks: int
    journal_uuid: bytes
    journal_inum: int
    journal_dev: int
    desc_size: int
    first_meta_bg: int
    blocks_count_hi: int
    log_groups_per_flex: int
    checksum_type: int
    error_count: int
    usr_quota_inum: int
    grp_quota_inum: int
    backup_bg0: int
    backup_bg1: int
    prj_quota_inum: int
    checksum_seed: int
    orphan_file_inum: int
    checksum: int


# struct ext4_super_block, 1024 bytes at byte 1024 of the volume.
_SUPERBLOCK_FIELDS = (
    (0x000, "I", "inodes_count"),
    (0x004, "I", "blocks_count_lo"),
    (0x014, "I", "first_data_block"),
    (0x018, "I", "log_block_size"),
    (0x01C, "I", "log_cluster_size"),
    (0x020, "I", "blocks_per_group"),
    (0x024, "I", "clusters_per_group"),
    (0x028, "I", "inodes_per_group"),
    (0x038, "H", "magic"),
    (0x03A, "H", "state"),
    (0x04C, "I", "rev_level"),
    (0x054, "I", "first_ino"),
    (0x058, "H", "inode_size"),
    (0x05C, "I", "feature_compat"),
    (0x060, "I", "feature_incompat"),
    (0x064, "I", "feature_ro_compat"),
    (0x068, "16s", "uuid"),
    (0x078, "16s", "volume_name"),
    (0x0CE, "H", "reserved_gdt_blocks"),
    (0x0D0, "16s", "journal_uuid"),
    (0x0E0, "I", "journal_inum"),
    (0x0E4, "I", "journal_dev"),
    (0x0FE, "H", "desc_size"),
    (0x104, "I", "first_meta_bg"),
    (0x150, "I", "blocks_count_hi"),
    (0x174, "B", "log_groups_per_flex"),
    (0x175, "B", "checksum_type"),
    (0x194, "I", "error_count"),
    (0x240, "I", "usr_quota_inum"),
    (0x244, "I", "grp_quota_inum"),
    (0x24C, "I", "backup_bg0"),
    (0x250, "I", "backup_bg1"),
    (0x26C, "I", "prj_quota_inum"),
    (0x270, "I", "checksum_seed"),
    (0x280, "I", "orphan_file_inum"),
    (0x3FC, "I", "checksum"),
)
_SUPERBLOCK = make_layout(_SUPERBLOCK_FIELDS, SUPERBLOCK_SIZE)
assert tuple(f[2] for f in _SUPERBLOCK_FIELDS) == Superblock._fields


def parse_superblock(data: bytes) -> Superblock:
    """Unpack the 1024 superblock bytes (no checks beyond the length)."""
    return Superblock._make(_SUPERBLOCK.unpack(data[:SUPERBLOCK_SIZE]))


class GroupDesc(NamedTuple):
    """One block group descriptor, 32- and 64-bit halves already combined."""

    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    flags: int
    checksum: int
    itable_unused: int = 0  # inodes at the end of the group's table never used (with checksums)


# struct ext4_group_desc: the 32-byte part, then (64bit feature) the high halves from 0x20.
_DESC_LO_FIELDS = (
    (0x00, "I", "block_bitmap_lo"),
    (0x04, "I", "inode_bitmap_lo"),
    (0x08, "I", "inode_table_lo"),
    (0x12, "H", "flags"),
    (0x1C, "H", "itable_unused_lo"),
    (0x1E, "H", "checksum"),
)
_DESC_HI_FIELDS = (
    (0x20, "I", "block_bitmap_hi"),
    (0x24, "I", "inode_bitmap_hi"),
    (0x28, "I", "inode_table_hi"),
    (0x32, "H", "itable_unused_hi"),
)
DESC_CHECKSUM_OFFSET = 0x1E
DESC_MIN_SIZE = 32
DESC_64BIT_MIN_SIZE = 64


@functools.lru_cache(maxsize=8)
def _descriptor_layout(desc_size: int) -> struct.Struct:
    if desc_size >= DESC_64BIT_MIN_SIZE:
        return make_layout(_DESC_LO_FIELDS + _DESC_HI_FIELDS, desc_size)
    return make_layout(_DESC_LO_FIELDS, desc_size)


def parse_descriptors(data: bytes, desc_size: int, count: int) -> list[GroupDesc]:
    """The first ``count`` descriptors of a concatenated descriptor table."""
    layout = _descriptor_layout(desc_size)
    if desc_size >= DESC_64BIT_MIN_SIZE:
        return [
            GroupDesc(bb | bbh << 32, ib | ibh << 32, it | ith << 32, flags, csum, iu | iuh << 16)
            for bb, ib, it, flags, iu, csum, bbh, ibh, ith, iuh in layout.iter_unpack(
                data[: count * desc_size]
            )
        ]
    return [
        GroupDesc(bb, ib, it, flags, csum, iu)
        for bb, ib, it, flags, iu, csum in layout.iter_unpack(data[: count * desc_size])
    ]


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def _crc16_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()
_CRC16 = _crc16_table()


def crc32c(crc: int, data: bytes) -> int:
    """Castagnoli CRC as ext4 uses it: caller's seed, no final inversion (the kernel's crc32c())."""
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def crc16(crc: int, data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005 reflected), the kernel's crc16() used by gdt_csum."""
    table = _CRC16
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def superblock_checksum(raw: bytes) -> int:
    """s_checksum of a metadata_csum superblock: crc32c over the bytes before the field."""
    return crc32c(0xFFFFFFFF, raw[:SUPERBLOCK_CHECKSUM_OFFSET])


def checksum_seed(sb: Superblock) -> int:
    """The seed every metadata_csum checksum starts from (csum_seed feature: stored)."""
    if sb.feature_incompat & INCOMPAT_CSUM_SEED:
        return sb.checksum_seed
    return crc32c(0xFFFFFFFF, sb.uuid)


def descriptor_checksum(sb: Superblock, seed: int, group: int, raw: bytes) -> int:
    """bg_checksum of one descriptor (``raw`` is its desc_size bytes), per ext4_group_desc_csum.

    metadata_csum: low 16 bits of crc32c(seed, group, descriptor with the field zeroed);
    gdt_csum: crc16(~0, uuid, group, descriptor without the field).
    """
    head, tail = raw[:DESC_CHECKSUM_OFFSET], raw[DESC_CHECKSUM_OFFSET + 2 :]
    group_le = struct.pack("<I", group)
    if sb.feature_ro_compat & RO_COMPAT_METADATA_CSUM:
        return crc32c(crc32c(seed, group_le), head + b"\0\0" + tail) & 0xFFFF
    return crc16(0xFFFF, sb.uuid + group_le + head + tail)


def format_uuid(raw: bytes) -> str:
    """The 16 UUID bytes as blkid prints them (lower case, 8-4-4-4-12)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def decode_label(raw: bytes) -> str:
    """s_volume_name: up to 16 bytes, NUL-terminated, UTF-8 in practice."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
