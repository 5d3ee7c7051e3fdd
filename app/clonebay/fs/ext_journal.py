"""What a pending ext3/4 journal replay will write: the journaled copies of chosen blocks.

When a volume was not cleanly unmounted (``needs_recovery``), transactions committed to the jbd2
journal may not have reached their home blocks yet. Their data blocks (ordered mode writes data
before the commit) are then in use although the on-disk block bitmaps still say free; the
journal's own copies of those bitmaps say used. This module walks the log from its start the way
``jbd2`` recovery's scan pass does (descriptor blocks list home block numbers; the copies follow
them; commit blocks advance the sequence; the first block with a wrong magic or sequence ends the
log) and returns the copies of the blocks the caller watches. Transactions that turn out to be
uncommitted are included too: the caller only ORs bitmaps, so an extra copy can only widen the map.

The journal is read through its inode (normally 8): an extent tree (ext4) or direct/indirect
block pointers (ext3). Layouts follow ``include/linux/jbd2.h`` (big-endian) and
``fs/ext4/ext4_extents.h``. Anything unexpected raises FilesystemError, so the volume is copied
raw rather than with a map that might miss replayed data.
"""

from __future__ import annotations

import bisect
import struct
from typing import NamedTuple

from clonebay.errors import FilesystemError
from clonebay.fs import ext_layout as layout
from clonebay.fs.ext_geometry import Geometry, read_bytes
from clonebay.system.blockdev import ByteSource

JBD2_MAGIC = 0xC03B3998
JBD2_DESCRIPTOR, JBD2_COMMIT, JBD2_SUPER_V1, JBD2_SUPER_V2, JBD2_REVOKE = 1, 2, 3, 4, 5
JBD2_INCOMPAT_REVOKE = 0x1
JBD2_INCOMPAT_64BIT = 0x2
JBD2_INCOMPAT_ASYNC_COMMIT = 0x4
JBD2_INCOMPAT_CSUM_V2 = 0x8
JBD2_INCOMPAT_CSUM_V3 = 0x10
JBD2_INCOMPAT_FAST_COMMIT = 0x20
JBD2_INCOMPAT_SUPPORTED = 0x1F
TAG_ESCAPE, TAG_SAME_UUID, TAG_LAST = 0x1, 0x2, 0x8

EXTENTS_FL = 0x80000
EXTENT_MAGIC = 0xF30A
MAX_EXTENT_DEPTH = 5
MAX_TREE_NODES = 65536  # bound on extent-tree nodes visited for one inode
INIT_MAX_LEN = 32768  # ee_len above this marks an unwritten extent of (len - 32768) blocks


class JournalSuper(NamedTuple):
    """journal_superblock_t (big-endian), the fields recovery needs."""

    magic: int
    blocktype: int
    blocksize: int
    maxlen: int
    first: int
    sequence: int
    start: int
    feature_incompat: int
    num_fc_blks: int


_JSB_FIELDS = (
    (0x00, "I", "magic"),
    (0x04, "I", "blocktype"),
    (0x0C, "I", "blocksize"),
    (0x10, "I", "maxlen"),
    (0x14, "I", "first"),
    (0x18, "I", "sequence"),
    (0x1C, "I", "start"),
    (0x28, "I", "feature_incompat"),
    (0x54, "I", "num_fc_blks"),
)
_JSB = layout.make_layout(_JSB_FIELDS, 0x58, ">")
assert tuple(f[2] for f in _JSB_FIELDS) == JournalSuper._fields

# struct ext4_inode: i_size_lo, i_flags, i_block[15], i_size_high.
_INODE = layout.make_layout(
    ((0x04, "I", "size_lo"), (0x20, "I", "flags"), (0x28, "60s", "block"), (0x6C, "I", "size_hi")),
    128,
)
_EXTENT_HEADER = struct.Struct("<HHHH4x")  # eh_magic, eh_entries, eh_max, eh_depth
_EXTENT_ENTRY = struct.Struct("<IHHI")  # leaf: ee_block, ee_len, ee_start_hi, ee_start_lo
_EXTENT_INDEX = struct.Struct("<IIH2x")  # index: ei_block, ei_leaf_lo, ei_leaf_hi
_HEADER = struct.Struct(">III")  # journal_header_t: h_magic, h_blocktype, h_sequence

Run = tuple[int, int, int]  # (logical block, physical block, count)


def pending_copies(
    src: ByteSource, geo: Geometry, descs: list[layout.GroupDesc], watched: set[int]
) -> dict[int, list[bytes]]:
    """Journaled copies of the ``watched`` fs blocks that a replay would write, by block."""
    sb = geo.sb
    if not sb.feature_compat & layout.COMPAT_HAS_JOURNAL:
        raise FilesystemError(f"{src.name}: ext volume needs recovery but has no journal")
    if sb.journal_inum == 0:
        raise FilesystemError(
            f"{src.name}: ext volume needs recovery from an external journal device,"
            " which cannot be read here"
        )
    log = JournalMap(src, geo, descs, sb.journal_inum)
    jsb = log.superblock()
    if jsb.start == 0:
        return {}
    return log.scan(jsb, watched)


class JournalMap:
    """The journal inode's blocks, readable by journal block number."""

    def __init__(
        self, src: ByteSource, geo: Geometry, descs: list[layout.GroupDesc], ino: int
    ) -> None:
        self.src, self.geo = src, geo
        size_lo, flags, iblock, size_hi = _INODE.unpack(_read_inode(src, geo, descs, ino))
        self.length = ((size_hi << 32) | size_lo) // geo.block_size
        if not 2 <= self.length <= geo.blocks_count:
            raise self.error(f"journal inode {ino} claims {self.length} blocks")
        if flags & EXTENTS_FL:
            runs = _extent_runs(src, geo, iblock, self.length)
        else:
            runs = _indirect_runs(src, geo, iblock, self.length)
        self.runs = runs
        self.starts = [r[0] for r in runs]

    def error(self, why: str) -> FilesystemError:
        return FilesystemError(f"{self.src.name}: ext journal: {why}")

    def read(self, logical: int) -> bytes:
        i = bisect.bisect_right(self.starts, logical) - 1
        if i < 0 or logical >= self.runs[i][0] + self.runs[i][2]:
            raise self.error(f"journal block {logical} is not mapped (hole in the journal inode)")
        physical = self.runs[i][1] + logical - self.runs[i][0]
        bs = self.geo.block_size
        return read_bytes(self.src, bs, physical * bs, f"journal block {logical}")

    def superblock(self) -> JournalSuper:
        jsb = JournalSuper._make(_JSB.unpack(self.read(0)[: _JSB.size]))
        if jsb.magic != JBD2_MAGIC or jsb.blocktype not in (JBD2_SUPER_V1, JBD2_SUPER_V2):
            raise self.error(f"bad journal superblock (magic {jsb.magic:#x}, type {jsb.blocktype})")
        if jsb.blocktype == JBD2_SUPER_V1:
            jsb = jsb._replace(feature_incompat=0)
        if jsb.blocksize != self.geo.block_size:
            raise self.error(f"journal block size {jsb.blocksize} differs from the filesystem's")
        if not 1 <= jsb.first < jsb.maxlen <= self.length:
            raise self.error(f"journal bounds first={jsb.first} maxlen={jsb.maxlen} are invalid")
        if jsb.start and not jsb.first <= jsb.start < jsb.maxlen:
            raise self.error(f"journal start {jsb.start} is outside the log")
        unknown = jsb.feature_incompat & ~JBD2_INCOMPAT_SUPPORTED
        if jsb.start and jsb.feature_incompat & JBD2_INCOMPAT_FAST_COMMIT:
            raise self.error("fast-commit blocks need replay; they are not parsed")
        if unknown & ~JBD2_INCOMPAT_FAST_COMMIT:
            raise self.error(f"unsupported journal feature flags {unknown:#x}")
        return jsb

    def scan(self, jsb: JournalSuper, watched: set[int]) -> dict[int, list[bytes]]:
        """Walk the log from s_start; collect copies of watched blocks until the log ends."""
        tag_size = _tag_size(jsb.feature_incompat)
        csum = jsb.feature_incompat & (JBD2_INCOMPAT_CSUM_V2 | JBD2_INCOMPAT_CSUM_V3)
        tag_space = self.geo.block_size - (4 if csum else 0)
        wide = bool(jsb.feature_incompat & JBD2_INCOMPAT_64BIT)
        v3 = bool(jsb.feature_incompat & JBD2_INCOMPAT_CSUM_V3)
        out: dict[int, list[bytes]] = {}
        span = jsb.maxlen - jsb.first
        pos, sequence, steps = jsb.start, jsb.sequence, 0

        def advance(p: int) -> int:
            return jsb.first if p + 1 >= jsb.maxlen else p + 1

        while steps < span:
            block = self.read(pos)
            magic, kind, seq = _HEADER.unpack_from(block)
            if magic != JBD2_MAGIC or seq != sequence:
                break
            if kind == JBD2_DESCRIPTOR:
                for home, flags in _tags(block, tag_size, tag_space, wide, v3):
                    pos, steps = advance(pos), steps + 1
                    if home in watched and steps < span:
                        copy = self.read(pos)
                        if flags & TAG_ESCAPE:
                            copy = JBD2_MAGIC.to_bytes(4, "big") + copy[4:]
                        out.setdefault(home, []).append(copy)
            elif kind == JBD2_COMMIT:
                sequence = (sequence + 1) & 0xFFFFFFFF
            elif kind != JBD2_REVOKE:
                break
            pos, steps = advance(pos), steps + 1
        return out


def _tag_size(incompat: int) -> int:
    """journal_tag_bytes(): 16 with csum v3; else 8, +4 with 64bit, +2 with csum v2."""
    if incompat & JBD2_INCOMPAT_CSUM_V3:
        return 16
    size = 12 + (2 if incompat & JBD2_INCOMPAT_CSUM_V2 else 0)
    return size if incompat & JBD2_INCOMPAT_64BIT else size - 4


def _tags(
    block: bytes, tag_size: int, tag_space: int, wide: bool, v3: bool
) -> list[tuple[int, int]]:
    """(home block, flags) of each tag of a descriptor block, in log order."""
    tags = []
    pos = _HEADER.size
    while pos + tag_size <= tag_space:
        low = int.from_bytes(block[pos : pos + 4], "big")
        if v3:
            flags = int.from_bytes(block[pos + 4 : pos + 8], "big")
        else:
            flags = int.from_bytes(block[pos + 6 : pos + 8], "big")
        high = int.from_bytes(block[pos + 8 : pos + 12], "big") if wide else 0
        tags.append((high << 32 | low, flags))
        pos += tag_size + (0 if flags & TAG_SAME_UUID else 16)
        if flags & TAG_LAST:
            break
    return tags


def _read_inode(src: ByteSource, geo: Geometry, descs: list[layout.GroupDesc], ino: int) -> bytes:
    ipg = geo.sb.inodes_per_group
    if not 1 <= ino <= geo.sb.inodes_count:
        raise FilesystemError(f"{src.name}: ext journal inode number {ino} is out of range")
    group, index = divmod(ino - 1, ipg)
    offset = descs[group].inode_table * geo.block_size + index * geo.inode_size
    return read_bytes(src, 128, offset, f"inode {ino}")


def _check_run(src: ByteSource, geo: Geometry, physical: int, count: int) -> None:
    """A journal block pointer must land past group 0's superblock and GDT (0 is a hole)."""
    if physical < geo.primary_meta_end() or physical + count > geo.blocks_count:
        raise FilesystemError(
            f"{src.name}: ext journal blocks {physical}+{count} lie outside the filesystem"
        )


def _extent_runs(src: ByteSource, geo: Geometry, root: bytes, length: int) -> list[Run]:
    """Leaf extents of an inode's extent tree (root in i_block), for logical blocks < length."""
    runs: list[Run] = []
    stack: list[tuple[bytes, int]] = [(root, MAX_EXTENT_DEPTH + 1)]
    visited = 0
    while stack:
        node, depth_left = stack.pop()
        visited += 1
        magic, entries, most, depth = _EXTENT_HEADER.unpack_from(node)
        capacity = (len(node) - _EXTENT_HEADER.size) // _EXTENT_ENTRY.size
        if magic != EXTENT_MAGIC or entries > most or most > capacity or depth >= depth_left:
            raise FilesystemError(f"{src.name}: ext journal inode has a corrupt extent tree node")
        if visited > MAX_TREE_NODES:
            raise FilesystemError(f"{src.name}: ext journal extent tree is too large")
        offsets = [_EXTENT_HEADER.size + i * _EXTENT_ENTRY.size for i in range(entries)]
        if depth == 0:
            for off in offsets:
                logical, count, hi, lo = _EXTENT_ENTRY.unpack_from(node, off)
                count = count - INIT_MAX_LEN if count > INIT_MAX_LEN else count
                _check_run(src, geo, hi << 32 | lo, count)
                if logical < length:
                    runs.append((logical, hi << 32 | lo, min(count, length - logical)))
            continue
        for off in reversed(offsets):
            _logical, lo, hi = _EXTENT_INDEX.unpack_from(node, off)
            _check_run(src, geo, hi << 32 | lo, 1)
            bs = geo.block_size
            stack.append((read_bytes(src, bs, (hi << 32 | lo) * bs, "extent tree block"), depth))
    runs.sort()
    return runs


def _indirect_runs(src: ByteSource, geo: Geometry, iblock: bytes, length: int) -> list[Run]:
    """Block runs of an ext2/3 inode: 12 direct pointers, then single, double, triple indirect."""
    pointers = struct.unpack("<15I", iblock)
    per_block = geo.block_size // 4
    blocks: list[int] = []

    def walk(pointer: int, level: int) -> None:
        if len(blocks) >= length:
            return
        _check_run(src, geo, pointer, 1)
        if level == 0:
            blocks.append(pointer)
            return
        data = read_bytes(src, geo.block_size, pointer * geo.block_size, "indirect block")
        for child in struct.unpack(f"<{per_block}I", data):
            if len(blocks) >= length:
                return
            walk(child, level - 1)

    for i, pointer in enumerate(pointers):
        walk(pointer, max(0, i - 11))
    runs: list[Run] = []
    for logical, physical in enumerate(blocks):
        if runs and runs[-1][1] + runs[-1][2] == physical:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((logical, physical, 1))
    return runs
