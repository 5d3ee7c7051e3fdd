"""ext2/3/4 inodes: the fields that say what a file is and where its blocks lie, and directories.

An inode's ``i_block`` (60 bytes) maps the file's logical blocks to volume blocks in one of two
ways. ext4 files (``EXTENTS_FL``) hold the root of an extent tree: a header and up to four
entries; index entries point at tree blocks further down, leaf entries map a run of logical
blocks to a run of physical ones. ext2/3 files hold 12 direct block pointers, then one single,
one double and one triple indirect pointer: blocks full of pointers, nested that deep.

``block_map`` walks either form and says, for each run, which logical blocks it holds; tree
blocks and indirect blocks are reported too (they are the file's metadata). A tree block that
the caller says is unreadable (``read`` returns None) is not parsed: the logical blocks it
would have mapped are returned as lost. Anything malformed in a readable block raises
FilesystemError for that inode only, so one damaged file does not stop a whole walk.

Directories are files of entries (inode, record length, name length, file type, name), read
block by block; hashed (htree) directories keep the same entries in their leaf blocks and hide
their index in entries that span a whole block with inode 0, so a linear read sees every name.

Layouts: the kernel's ``fs/ext4/ext4.h`` (``struct ext4_inode``, ``struct ext4_dir_entry_2``)
and ``fs/ext4/ext4_extents.h``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

from clonebay.errors import FilesystemError
from clonebay.fs.ext_layout import make_layout

S_IFMT, S_IFDIR, S_IFREG, S_IFLNK = 0xF000, 0x4000, 0x8000, 0xA000
EXTENTS_FL = 0x80000
INLINE_DATA_FL = 0x10000000
EXTENT_MAGIC = 0xF30A
MAX_EXTENT_DEPTH = 5
MAX_TREE_NODES = 1 << 20  # tree blocks visited for one inode: 4 GiB of 4 KiB tree blocks
INIT_MAX_LEN = 32768  # ee_len above this marks an unwritten extent of (len - 32768) blocks
FAST_SYMLINK_MAX = 60  # a symlink target shorter than this lives in i_block
DIRECT_POINTERS = 12


class Inode(NamedTuple):
    """The fields of ``struct ext4_inode`` that locate a file's blocks (names without ``i_``)."""

    mode: int
    size_lo: int
    dtime: int
    links_count: int
    flags: int
    block: bytes
    file_acl_lo: int
    size_high: int
    file_acl_high: int

    @property
    def size(self) -> int:
        return self.size_high << 32 | self.size_lo

    @property
    def file_acl(self) -> int:
        """The block holding the inode's extended attributes (0: none)."""
        return self.file_acl_high << 32 | self.file_acl_lo

    @property
    def is_dir(self) -> bool:
        return self.mode & S_IFMT == S_IFDIR

    @property
    def live(self) -> bool:
        """In use as debugfs's icheck counts it: linked and not deleted."""
        return self.links_count > 0 and self.dtime == 0

    @property
    def has_blocks(self) -> bool:
        """Does i_block map blocks (not inline data, not a fast symlink's target)?"""
        if self.flags & INLINE_DATA_FL:
            return False
        if self.mode & S_IFMT == S_IFLNK:
            return bool(self.flags & EXTENTS_FL) or self.size >= FAST_SYMLINK_MAX
        return True


_INODE_FIELDS = (
    (0x00, "H", "mode"),
    (0x04, "I", "size_lo"),
    (0x14, "I", "dtime"),
    (0x1A, "H", "links_count"),
    (0x20, "I", "flags"),
    (0x28, "60s", "block"),
    (0x68, "I", "file_acl_lo"),
    (0x6C, "I", "size_high"),
    (0x76, "H", "file_acl_high"),
)
INODE = make_layout(_INODE_FIELDS, 128)
assert tuple(f[2] for f in _INODE_FIELDS) == Inode._fields

_EXTENT_HEADER = struct.Struct("<HHHH4x")  # eh_magic, eh_entries, eh_max, eh_depth
_EXTENT_LEAF = struct.Struct("<IHHI")  # ee_block, ee_len, ee_start_hi, ee_start_lo
_EXTENT_INDEX = struct.Struct("<IIH2x")  # ei_block, ei_leaf_lo, ei_leaf_hi
_DIRENT = struct.Struct("<IHBB")  # inode, rec_len, name_len, file_type (or name_len high byte)

DATA, UNWRITTEN, TREE = "data", "unwritten", "tree"


class Piece(NamedTuple):
    """``blocks`` blocks at volume block ``physical``: file data from logical block ``logical``
    on, preallocated (unwritten) blocks, or a tree/indirect block mapping from ``logical`` on."""

    role: str
    logical: int
    physical: int
    blocks: int


class LostMap(NamedTuple):
    """An unreadable tree block at ``physical`` that mapped logical blocks [first, end)."""

    physical: int
    first: int
    end: int


def parse_inode(raw: bytes) -> Inode:
    return Inode._make(INODE.unpack_from(raw))


Reader = Callable[[int], bytes | None]  # a volume block's bytes, or None if unreadable


class BlockMap:
    """The walk of one inode's block map; results in ``pieces`` and ``lost``.

    ``wanted(first, end)`` may say that no block in [first, end) interests the caller: then a
    run of data pointers there is not listed (tree blocks always are), which keeps a walk for
    a few unreadable blocks from building the whole map of every large ext3 file.
    """

    def __init__(
        self,
        read: Reader,
        block_size: int,
        blocks_count: int,
        wanted: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.read, self.wanted = read, wanted
        self.block_size, self.blocks_count = block_size, blocks_count
        self.pieces: list[Piece] = []
        self.lost: list[LostMap] = []
        self.nodes = 0
        self.length = 0

    def walk(self, inode: Inode, length: int) -> None:
        """Map ``inode``; ``length`` bounds the logical blocks (for lost maps' ends)."""
        if not inode.has_blocks:
            return
        if inode.flags & EXTENTS_FL:
            self._extent_node(inode.block, MAX_EXTENT_DEPTH + 1, 0, length)
            return
        # Block-mapped files cannot hold blocks past their size (no fallocate without extents),
        # so the walk stops there: garbage pointers cannot send it through millions of blocks.
        self.length = length
        pointers = struct.unpack("<15I", inode.block)
        self._pointers(pointers[:DIRECT_POINTERS], 0)
        per = self.block_size // 4
        logical = DIRECT_POINTERS
        for level, pointer in enumerate(pointers[DIRECT_POINTERS:], start=1):
            span = per**level
            if pointer and logical < length:
                self._indirect(pointer, level, logical, span)
            logical += span

    def _check(self, physical: int, count: int, what: str) -> None:
        if physical <= 0 or count <= 0 or physical + count > self.blocks_count:
            raise FilesystemError(
                f"{what} at block {physical} (+{count}) lies outside the volume"
                f" ({self.blocks_count} blocks)"
            )

    def _node(self, physical: int, first: int, end: int) -> bytes | None:
        self._check(physical, 1, "tree block")
        self.nodes += 1
        if self.nodes > MAX_TREE_NODES:
            raise FilesystemError(f"block map has more than {MAX_TREE_NODES} tree blocks")
        self.pieces.append(Piece(TREE, first, physical, 1))
        data = self.read(physical)
        if data is None:
            self.lost.append(LostMap(physical, first, end))
        return data

    def _extent_node(self, node: bytes, depth_left: int, first: int, end: int) -> None:
        magic, entries, most, depth = _EXTENT_HEADER.unpack_from(node)
        capacity = (len(node) - _EXTENT_HEADER.size) // _EXTENT_LEAF.size
        if magic != EXTENT_MAGIC or entries > most or most > capacity or depth >= depth_left:
            raise FilesystemError("corrupt extent tree node")
        offsets = [_EXTENT_HEADER.size + i * _EXTENT_LEAF.size for i in range(entries)]
        if depth == 0:
            for off in offsets:
                logical, count, hi, lo = _EXTENT_LEAF.unpack_from(node, off)
                role = DATA
                if count > INIT_MAX_LEN:
                    role, count = UNWRITTEN, count - INIT_MAX_LEN
                self._check(hi << 32 | lo, count, "extent")
                self._add(role, logical, hi << 32 | lo, count)
            return
        starts = [_EXTENT_INDEX.unpack_from(node, off) for off in offsets]
        for i, (logical, lo, hi) in enumerate(starts):
            child_end = starts[i + 1][0] if i + 1 < len(starts) else end
            child = self._node(hi << 32 | lo, logical, max(logical, child_end))
            if child is not None:
                self._extent_node(child, depth, logical, child_end)

    def _indirect(self, pointer: int, level: int, first: int, span: int) -> None:
        data = self._node(pointer, first, first + span)
        if data is None:
            return
        pointers = struct.unpack(f"<{len(data) // 4}I", data)
        if level == 1:
            self._pointers(pointers, first)
            return
        child_span = span // len(pointers)
        for i, child in enumerate(pointers):
            if child and first + i * child_span < self.length:
                self._indirect(child, level - 1, first + i * child_span, child_span)

    def _pointers(self, pointers: tuple[int, ...], first: int) -> None:
        """Direct pointers to data blocks (0: a hole), merged into runs."""
        pointers = pointers[: max(0, self.length - first)]
        live = [p for p in pointers if p]
        if not live:
            return
        if self.wanted is not None and not self.wanted(min(live), max(live) + 1):
            return
        i, n = 0, len(pointers)
        while i < n:
            start = pointers[i]
            j = i + 1
            if start:
                while j < n and pointers[j] == start + (j - i):
                    j += 1
                self._check(start, j - i, "data block")
                self._add(DATA, first + i, start, j - i)
            i = j

    def _add(self, role: str, logical: int, physical: int, count: int) -> None:
        if self.wanted is None or self.wanted(physical, physical + count):
            self.pieces.append(Piece(role, logical, physical, count))


FT_DIR = 2  # file_type of a directory entry naming a directory


def dir_entries(data: bytes, block_size: int, wide_names: bool) -> Iterator[tuple[int, bytes, int]]:
    """(inode, name, file type) of the live entries of directory blocks ``data``; a malformed
    record ends its block. ``wide_names``: no filetype feature, so the name length has 16 bits
    (and the type is reported as 0, unknown)."""
    for base in range(0, len(data) - block_size + 1, block_size):
        pos, end = base, base + block_size
        while pos + _DIRENT.size <= end:
            ino, rec_len, name_len, high = _DIRENT.unpack_from(data, pos)
            if rec_len in (0, 65535) and block_size == 65536:
                rec_len = 65536  # ext4_rec_len_from_disk: 64 KiB blocks
            if wide_names:
                name_len, high = name_len | high << 8, 0
            if rec_len < _DIRENT.size or rec_len % 4 or pos + rec_len > end:
                break
            if ino and _DIRENT.size + name_len <= rec_len:
                yield ino, data[pos + _DIRENT.size : pos + _DIRENT.size + name_len], high
            pos += rec_len


def inline_dir_entries(inode: Inode, wide_names: bool) -> Iterator[tuple[int, bytes, int]]:
    """Entries of a directory kept in its inode: the parent's number, then 56 bytes of
    entries (``INLINE_DATA_FL``; more may sit in an extended attribute, not read here)."""
    yield struct.unpack_from("<I", inode.block)[0], b"..", FT_DIR
    yield from dir_entries(inode.block[4:], 56, wide_names)
