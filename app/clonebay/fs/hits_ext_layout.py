"""ext2/3/4 hits, part one: open the volume, claim its fixed structures and its free space.

The fixed layout is computed from the superblock and the group descriptors alone: the boot
area, the superblock and descriptor copies, reserved GDT blocks, and every group's bitmaps and
inode table. An inode table hit names the inodes it held (their files are looked up by name
later: their size and block map are gone). Free space comes from the block bitmaps of the
groups the remaining bytes fall in.

The primary superblock and descriptor table may themselves be unreadable: then a backup copy
is used (the superblock of group 1, the descriptor copies after it), and since a backup's
per-group flags and unused-inode counts may be stale, nothing is called free and every inode
table is read in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from clonebay.errors import FilesystemError
from clonebay.fs import ext, extents
from clonebay.fs import ext_layout as layout
from clonebay.fs.ext_geometry import Geometry, read_bytes
from clonebay.fs.ext_inode import Inode, parse_inode
from clonebay.fs.hits_base import HitBook, HitKind
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

ROOT_INO = 2
GOOD_OLD_FIRST_INO = 11
BOOT_AREA = 1024  # before the superblock: not the filesystem's (boot loaders may use it)
# Where a superblock backup may lie: in groups 1, 3, 5, 7, 9 and 25 (those sparse_super
# keeps), for each block size with mke2fs's default groups (8 blocks per bit of a one-block
# bitmap) or smaller ones (mke2fs -g), down to 1024 blocks a group; 1 KiB blocks count from 1.
# A few hundred candidates, most past the end; one 1 KiB read each.
BACKUP_GROUPS = (1, 3, 5, 7, 9, 25)
BACKUP_SUPERBLOCKS = tuple(
    sorted(
        {
            ((1 if bs == 1024 else 0) + group * 8 * bs // (1 << shift)) * bs
            for group in BACKUP_GROUPS
            for bs in (1024, 2048, 4096, 8192, 16384, 32768, 65536)
            for shift in range(8)
            if 8 * bs // (1 << shift) >= 1024
        }
    )
)
SPECIAL_INODES = {
    1: "bad blocks list",
    3: "user quota",
    4: "group quota",
    5: "boot loader inode",
    6: "undelete directory",
    7: "resize inode (reserved GDT blocks)",
    8: "journal",
    9: "exclude bitmap",
    10: "replica inode",
}


@dataclass
class Volume:
    """An ext volume opened for hit-finding: geometry, descriptors, and how far to trust them."""

    src: ByteSource
    book: HitBook
    geo: Geometry
    descs: list[layout.GroupDesc]
    fs: str  # "ext2", "ext3" or "ext4": the prefix of every structure's name
    from_backup: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def bs(self) -> int:
        return self.geo.block_size

    @property
    def first_ino(self) -> int:
        return GOOD_OLD_FIRST_INO if self.geo.sb.rev_level == 0 else self.geo.sb.first_ino

    def block(self, number: int) -> bytes | None:
        """Block ``number``, or None when it is (partly) unreadable."""
        if self.book.unreadable(number * self.bs, self.bs):
            return None
        return read_bytes(self.src, self.bs, number * self.bs, f"block {number}")

    def used_inodes(self, group: int) -> int:
        """Inodes at the start of ``group``'s table that may be in use (the rest never were)."""
        ipg = self.geo.sb.inodes_per_group
        if self.from_backup or not self.geo.has_group_csum:
            return ipg
        desc = self.descs[group]
        if desc.flags & layout.BG_INODE_UNINIT:
            return 0
        return max(0, ipg - desc.itable_unused)

    def inode_offset(self, ino: int) -> int:
        group, index = divmod(ino - 1, self.geo.sb.inodes_per_group)
        return self.descs[group].inode_table * self.bs + index * self.geo.inode_size

    def read_inode(self, ino: int) -> Inode | None:
        """Inode ``ino``, or None when unreadable or out of range."""
        if not 1 <= ino <= self.geo.sb.inodes_count:
            return None
        offset = self.inode_offset(ino)
        if self.book.unreadable(offset, self.geo.inode_size):
            return None
        return parse_inode(read_bytes(self.src, 128, offset, f"inode {ino}"))

    def special_name(self, ino: int) -> str | None:
        """The structure a reserved or superblock-named inode holds ("ext4 journal")."""
        sb = self.geo.sb
        named = {
            sb.journal_inum: "journal",
            sb.usr_quota_inum: "user quota",
            sb.grp_quota_inum: "group quota",
            sb.prj_quota_inum: "project quota",
            sb.orphan_file_inum: "orphan file",
        }
        name = named.get(ino) if ino else None
        if name is None and ino < self.first_ino and ino != ROOT_INO:
            name = SPECIAL_INODES.get(ino, f"reserved inode {ino}")
        return None if name is None else f"{self.fs} {name}"


def open_volume(src: ByteSource, book: HitBook) -> Volume:
    """Superblock and descriptors, from backups where the primaries are unreadable."""
    geo, where = _superblock(src, book)
    fs = ext.fstype(geo.sb)
    vol = Volume(src, book, geo, [], fs)
    if where:
        vol.notes.append(
            f"the primary superblock is unreadable; the backup at byte {where} was used"
        )
    table, from_backup = _descriptor_table(vol)
    vol.descs = ext.read_descriptors(src, geo, table)
    vol.from_backup = from_backup or bool(where)
    if from_backup:
        vol.notes.append("the primary group descriptors are unreadable; their backups were used")
    return vol


def _superblock(src: ByteSource, book: HitBook) -> tuple[Geometry, int]:
    """The primary superblock, or the first readable backup in group 1 (byte offset, or 0)."""
    size = layout.SUPERBLOCK_SIZE
    for where in (layout.SUPERBLOCK_OFFSET, *BACKUP_SUPERBLOCKS):
        if where + size > src.size or book.unreadable(where, size):
            continue
        raw = read_bytes(src, size, where, "superblock")
        sb = layout.parse_superblock(raw)
        if where == layout.SUPERBLOCK_OFFSET:
            return Geometry.from_superblock(sb, raw, src), 0
        if sb.magic != layout.MAGIC:
            continue
        try:
            geo = Geometry.from_superblock(sb, raw, src)
        except FilesystemError:
            continue
        if any(
            geo.group_base(g) * geo.block_size == where and geo.has_super(g)
            for g in BACKUP_GROUPS
            if g < geo.group_count
        ):
            return geo, where
    raise FilesystemError(
        f"{src.name}: the ext superblock at byte 1024 is unreadable and no readable backup was"
        f" found (groups {', '.join(map(str, BACKUP_GROUPS))}): the volume's layout is unknown"
    )


def descriptor_copies(geo: Geometry, index: int) -> Iterator[int]:
    """Blocks holding descriptor block ``index``: the primary first, then the backups (lazily:
    a 16 TiB volume has 2,048 descriptor blocks and 131,072 groups)."""
    if not geo.meta_bg or index < geo.sb.first_meta_bg:
        for g in range(geo.group_count):
            if geo.has_super(g):
                yield geo.group_base(g) + 1 + index
        return
    first = index * geo.descs_per_block
    for g in (first, first + 1, first + geo.descs_per_block - 1):
        if g < geo.group_count:
            yield geo.group_base(g) + int(geo.has_super(g))


def _descriptor_table(vol: Volume) -> tuple[bytes, bool]:
    """Each descriptor block from its first readable copy; whether any was a backup."""
    parts, backup = [], False
    for index in range(vol.geo.gdt_blocks):
        for n, block in enumerate(descriptor_copies(vol.geo, index)):
            if block < vol.geo.blocks_count and (data := vol.block(block)) is not None:
                parts.append(data)
                backup |= n > 0
                break
        else:
            raise FilesystemError(
                f"{vol.src.name}: ext group descriptor block {index} and all its backups are"
                " unreadable: the volume's layout is unknown"
            )
    return b"".join(parts), backup


def claim_layout(vol: Volume) -> list[tuple[int, int, int]]:
    """Claim the fixed structures; return the lost inodes as (group, first, last) numbers."""
    book, geo, bs, fs = vol.book, vol.geo, vol.bs, vol.fs
    book.claim(HitKind.METADATA, f"{fs} boot area (before the superblock)", 0, BOOT_AREA)
    note = "; ".join(vol.notes)
    for group in range(geo.group_count):
        base = geo.group_base(group)
        if geo.has_super(group):
            name = "superblock" if group == 0 else f"superblock backup of group {group}"
            book.claim(HitKind.METADATA, f"{fs} {name}", base * bs, bs, _primary_note(group, note))
        if geo.has_super(group) and (
            not geo.meta_bg or group < geo.sb.first_meta_bg * geo.descs_per_block
        ):  # the old-style descriptor copies and reserved GDT blocks (as base_meta_runs)
            name = (
                "group descriptors" if group == 0 else f"group descriptor backup of group {group}"
            )
            book.claim(HitKind.METADATA, f"{fs} {name}", (base + 1) * bs, geo.old_gdt_blocks * bs)
            reserved = base + 1 + geo.old_gdt_blocks
            name = "reserved GDT blocks" + (f" of group {group}" if group else "")
            book.claim(
                HitKind.METADATA, f"{fs} {name}", reserved * bs, geo.reserved_gdt_blocks * bs
            )
    for index in range(geo.sb.first_meta_bg if geo.meta_bg else geo.gdt_blocks, geo.gdt_blocks):
        for n, block in enumerate(descriptor_copies(geo, index)):
            name = f"group descriptor block {index}" + (" (backup)" if n else "")
            book.claim(HitKind.METADATA, f"{fs} {name}", block * bs, bs)
    lost: list[tuple[int, int, int]] = []
    for group, desc in enumerate(vol.descs):
        book.claim(
            HitKind.METADATA, f"{fs} block bitmap of group {group}", desc.block_bitmap * bs, bs
        )
        book.claim(
            HitKind.METADATA, f"{fs} inode bitmap of group {group}", desc.inode_bitmap * bs, bs
        )
        lost.extend(_claim_inode_table(vol, group, desc))
    return lost


def _primary_note(group: int, note: str) -> str:
    if group:
        return ""
    return note or "backups exist (e2fsck -b with a backup's block number restores it)"


def _claim_inode_table(
    vol: Volume, group: int, desc: layout.GroupDesc
) -> list[tuple[int, int, int]]:
    geo, isz = vol.geo, vol.geo.inode_size
    start = desc.inode_table * vol.bs
    got = vol.book.take(start, geo.inode_blocks_per_group * vol.bs)
    if not got:
        return []
    first_ino = group * geo.sb.inodes_per_group + 1
    used = vol.used_inodes(group)
    lost = []
    for e in got:
        first, last = (e.start - start) // isz, (e.end - 1 - start) // isz
        if first < used:
            lost.append((group, first_ino + first, first_ino + min(last, used - 1)))
    spans = ", ".join(f"{a}-{b}" if a != b else f"{a}" for _, a, b in lost)
    note = f"inodes {spans}: the files they describe are lost" if lost else "no inode in use there"
    name = f"{vol.fs} inode table of group {group}"
    vol.book.add(HitKind.METADATA, name, got, at=got[0].start, note=note)
    return lost


def claim_free(vol: Volume) -> set[int]:
    """Claim the pending bytes the block bitmaps mark free; return the groups whose bitmap is
    unreadable (their bytes may be free or not)."""
    geo, bs, book = vol.geo, vol.bs, vol.book
    past = geo.size
    book.claim(HitKind.FREE, f"space past the end of the {vol.fs} filesystem", past, 1 << 62)
    doubtful: set[int] = set()
    if vol.from_backup:
        return doubtful
    groups = sorted({g for e in book.pending for g in _groups_of(geo, e)})
    for group in groups:
        first = geo.group_first_block(group)
        count = min(geo.blocks_per_group, geo.blocks_count - first)
        if not book.overlaps(first * bs, count * bs):
            continue
        desc = vol.descs[group]
        if geo.has_group_csum and desc.flags & layout.BG_BLOCK_UNINIT:
            used: list[Extent] = []  # its metadata is claimed already; nothing else is in use
        else:
            bitmap = vol.block(desc.block_bitmap)
            if bitmap is None:
                doubtful.add(group)
                continue
            clusters = -(-count // geo.cluster_ratio)
            used = extents.from_bitmap(bitmap, geo.cluster_size, clusters, first * bs)
        for free in extents.subtract((Extent(first * bs, count * bs),), used):
            book.claim(HitKind.FREE, "free space", free.start, free.length, _free_note(geo))
    return doubtful


def _free_note(geo: Geometry) -> str:
    note = "no file uses these blocks (a copy of the used blocks does not need them)"
    if geo.sb.feature_incompat & layout.INCOMPAT_RECOVER:
        note += "; but the journal needs replay, and blocks its transactions allocate look free"
    return note


def _groups_of(geo: Geometry, e: Extent) -> range:
    """The groups holding the bytes of ``e`` (inside the filesystem)."""

    def group(block: int) -> int:
        return min(
            geo.group_count - 1, max(0, block - geo.first_data_block) // geo.blocks_per_group
        )

    last = min(e.end, geo.size) - 1
    if last < e.start:
        return range(0)
    return range(group(e.start // geo.block_size), group(last // geo.block_size) + 1)
