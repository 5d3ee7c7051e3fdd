"""ext2/3/4 hits, part two: which inodes own the unreadable blocks that are in use.

ext keeps no map from a block back to its file, so the inode tables are read and each live
inode's block map is compared with the bytes still unexplained, as debugfs's ``icheck`` does.
Three things keep that short on a large volume:

* Groups are read nearest-first: ext4 puts a file's blocks in or near its inode's (flex)
  group, so the owners of a few bad blocks are usually in the first groups read, and the walk
  stops as soon as nothing is left to explain.
* Only the part of a table that has ever been used is read (``bg_itable_unused``).
* A map is only followed where it can matter: a run of pointers whose span misses every
  unexplained byte is not listed (tree and indirect blocks still have to be read).

The walk also notes every directory it meets, by group, for the name search that follows.
An inode whose map is malformed is skipped and counted; its blocks may end up unknown.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from clonebay.errors import FilesystemError
from clonebay.fs.ext_geometry import read_bytes
from clonebay.fs.ext_inode import DATA, EXTENTS_FL, TREE, BlockMap, Inode, parse_inode
from clonebay.fs.hits_base import file_ranges
from clonebay.fs.hits_ext_layout import Volume
from clonebay.model import Extent

READ_PIECE = 1 << 20  # inode table bytes read at a time
RESIZE_INO = 7  # holds the reserved GDT blocks (online resize)
DIND_SLOT = 13  # i_block's double indirect pointer


@dataclass
class Owner:
    """What one inode lost: file bytes, the same as volume bytes, map and attribute blocks."""

    inode: Inode
    at: int  # first volume byte found, to order the report
    data: list[Extent] = field(default_factory=list)  # byte ranges of the file
    volume: list[Extent] = field(default_factory=list)  # volume ranges of its data blocks
    tree: list[Extent] = field(default_factory=list)  # volume ranges of its map blocks
    xattr: list[Extent] = field(default_factory=list)  # volume range of its attribute block
    unwritten: bool = False
    lost_maps: list[tuple[int, int]] = field(default_factory=list)  # unmappable file bytes


class Scanner:
    """Reads inode tables group by group; claims owners' blocks; collects directories."""

    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.owners: dict[int, Owner] = {}
        self.dirs: dict[int, list[tuple[int, Inode]]] = {}  # group -> its live directories
        self.damaged: list[int] = []  # inodes whose block map is malformed

    def live_inodes(self, group: int) -> Iterator[tuple[int, Inode]]:
        """The live inodes of ``group``'s used table part (unreadable ones are skipped: the
        layout step reported them)."""
        vol, isz = self.vol, self.vol.geo.inode_size
        used = vol.used_inodes(group)
        table = vol.descs[group].inode_table * vol.bs
        first_ino = group * vol.geo.sb.inodes_per_group + 1
        per = READ_PIECE // isz
        for first in range(0, used, per):
            count = min(per, used - first)
            start = table + first * isz
            data = read_bytes(vol.src, count * isz, start, f"inode table of group {group}")
            holed = vol.book.unreadable(start, count * isz)
            for i in range(count):
                if holed and vol.book.unreadable(start + i * isz, isz):
                    continue
                inode = parse_inode(data[i * isz : i * isz + 128])
                if inode.live:
                    yield first_ino + first + i, inode

    def directories(self, group: int) -> list[tuple[int, Inode]]:
        """The live directories of ``group`` (its table is read once)."""
        if group not in self.dirs:
            self.dirs[group] = [(n, i) for n, i in self.live_inodes(group) if i.is_dir]
        return self.dirs[group]

    def claim_owners(self) -> None:
        """Walk groups nearest the unexplained bytes first until nothing is left."""
        vol = self.vol
        for group in nearest_groups(vol, _pending_groups(vol)):
            if not vol.book.pending:
                return
            dirs = []
            for ino, inode in self.live_inodes(group):
                if inode.is_dir:
                    dirs.append((ino, inode))
                self._claim(ino, inode)
            self.dirs[group] = dirs

    def _claim(self, ino: int, inode: Inode) -> None:
        vol = self.vol
        bs, book = vol.bs, vol.book
        if ino == RESIZE_INO and not inode.flags & EXTENTS_FL:
            # Its double indirect block lists the reserved GDT blocks, which list their
            # backups: all fixed layout, claimed already. Walking it would read every one.
            pointer = struct.unpack_from("<I", inode.block, 4 * DIND_SLOT)[0]
            got = book.take(pointer * bs, bs) if 0 < pointer < vol.geo.blocks_count else ()
            if got:
                self._owner(ino, inode, got[0].start).tree.extend(got)
            return

        ratio = vol.geo.cluster_ratio  # bigalloc: the rest of a cluster belongs to its file

        def pending(first: int, end: int) -> bool:
            first, end = first - first % ratio, -(-end // ratio) * ratio
            return book.overlaps(first * bs, (end - first) * bs)

        walk = BlockMap(vol.block, bs, vol.geo.blocks_count, pending)
        try:
            walk.walk(inode, -(-inode.size // bs))
        except FilesystemError:
            self.damaged.append(ino)  # what was mapped before the damage still counts
        for piece in walk.pieces:
            if ratio > 1 and piece.role != TREE:
                self._claim_cluster_slack(ino, inode, piece.physical, piece.blocks)
            got = book.take(piece.physical * bs, piece.blocks * bs)
            if not got:
                continue
            owner = self._owner(ino, inode, got[0].start)
            if piece.role == TREE:
                owner.tree.extend(got)
                continue
            owner.volume.extend(got)
            if piece.role == DATA:
                ranges = file_ranges(got, piece.physical * bs, piece.logical * bs, inode.size)
                owner.data.extend(ranges)
            else:
                owner.unwritten = True
        for lost in walk.lost:
            owner = self._owner(ino, inode, lost.physical * bs)
            end = min(lost.end * bs, inode.size)
            if end > lost.first * bs:
                owner.lost_maps.append((lost.first * bs, end))
        if inode.file_acl:
            got = book.take(inode.file_acl * bs, bs)
            if got:
                self._owner(ino, inode, got[0].start).xattr.extend(got)

    def _claim_cluster_slack(self, ino: int, inode: Inode, physical: int, blocks: int) -> None:
        """The blocks of a run's first and last cluster outside the run (bigalloc)."""
        bs, ratio = self.vol.bs, self.vol.geo.cluster_ratio
        before = physical - physical % ratio
        after = -(-(physical + blocks) // ratio) * ratio
        for start, end in ((before, physical), (physical + blocks, after)):
            got = self.vol.book.take(start * bs, (end - start) * bs)
            if got:
                self._owner(ino, inode, got[0].start).volume.extend(got)

    def _owner(self, ino: int, inode: Inode, at: int) -> Owner:
        owner = self.owners.setdefault(ino, Owner(inode, at))
        owner.at = min(owner.at, at)
        return owner


def _pending_groups(vol: Volume) -> list[tuple[int, int]]:
    """(first, last) group of each unexplained run."""
    geo = vol.geo
    out = []
    for e in vol.book.pending:
        blocks = (e.start // vol.bs, (e.end - 1) // vol.bs)
        first, last = (max(0, b - geo.first_data_block) // geo.blocks_per_group for b in blocks)
        out.append((min(first, geo.group_count - 1), min(last, geo.group_count - 1)))
    return out


def nearest_groups(vol: Volume, spans: list[tuple[int, int]]) -> list[int]:
    """Every group, those inside or nearest to ``spans`` first."""

    def distance(group: int) -> int:
        return min((max(lo - group, group - hi, 0) for lo, hi in spans), default=0)

    return sorted(range(vol.geo.group_count), key=distance)
