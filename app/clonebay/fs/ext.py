"""ext2/3/4: probe a volume and map the blocks in use from its own block bitmaps.

Every block group has a block bitmap, one bit per cluster (per block without bigalloc), whose
location the group descriptor table gives. Concatenated in group order the bitmaps form one bit
string over the whole volume, because group ``g + 1`` starts exactly ``blocks_per_group`` blocks
after group ``g``; the used map is that bit string's runs of ones, cut at the volume's last block.
The journal, the resize inode's reserved GDT blocks, inode tables and backup superblocks are all
allocated in those bitmaps, so nothing else needs parsing for a cleanly unmounted volume.

Three cases need more than reading bitmaps:

* ``BLOCK_UNINIT`` groups (with ``uninit_bg``/``metadata_csum``) have no bitmap on disk. Their
  used blocks are computed as the kernel and e2fsprogs do: the superblock and descriptor copies at
  the group's start (``Geometry.base_meta_runs``) and the group's own bitmaps and inode table
  (which with ``flex_bg`` live in another group). Every group's bitmaps and inode table are added
  to the map whatever the flags say, so a stray flag can only make the map larger.
* Block 0 holds the boot sector: the first 2048 bytes are always in the map.
* A volume whose journal needs recovery: blocks allocated by transactions that are committed to the
  journal but not yet written home are free in the on-disk bitmaps but hold file data. The
  journal's copies of block bitmaps are OR-ed into the map (fs/ext_journal.py); anything the
  journal does that we cannot follow (resize, fast commits, an external journal) raises.

Descriptor checksums (crc16 for ``uninit_bg``, crc32c for ``metadata_csum``) are verified for
every group, as is the superblock's crc32c: a mismatch raises FilesystemError, so the caller copies
the volume raw. Bitmap checksums are not verified (that would cost a crc32c pass over every bitmap).
"""

from __future__ import annotations

from collections.abc import Iterable

from clonebay.errors import FilesystemError
from clonebay.fs import ext_journal, extents
from clonebay.fs import ext_layout as layout
from clonebay.fs.ext_geometry import Geometry, read_bytes
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource

BOOT_AREA = 2048  # boot sector + superblock, copied even where no bitmap covers them (1 KiB blocks)
BITMAP_BATCH_BYTES = 16 << 20  # bitmap bytes assembled per from_bitmap call
MAX_READ_RUN = 4 << 20  # longest single pread when fetching adjacent bitmap blocks
# Superblock fields an online resize changes: a journaled superblock differing in them is refused.
_LAYOUT_KEYS = (
    "blocks_count_lo",
    "blocks_count_hi",
    "blocks_per_group",
    "first_data_block",
    "first_meta_bg",
    "desc_size",
)


def detect(head: bytes) -> bool:
    """True when the ext magic 0xEF53 sits at byte 1024 + 56."""
    return head[layout.MAGIC_OFFSET : layout.MAGIC_OFFSET + 2] == layout.MAGIC.to_bytes(2, "little")


def probe(src: ByteSource) -> Volume:
    """Parse the ext volume in ``src`` and map its used blocks; FilesystemError when in doubt."""
    raw = read_bytes(src, layout.SUPERBLOCK_SIZE, layout.SUPERBLOCK_OFFSET, "superblock")
    sb = layout.parse_superblock(raw)
    geo = Geometry.from_superblock(sb, raw, src)
    descs = read_descriptors(src, geo)
    state, notes = volume_state(sb)
    journaled: dict[int, list[bytes]] = {}
    computed = uninit_groups(geo, descs)
    unread = set(computed)
    if sb.feature_incompat & layout.INCOMPAT_RECOVER:
        journaled = ext_journal.pending_copies(src, geo, descs, _watched_blocks(geo, descs))
        unread -= _check_journaled_layout(geo, descs, journaled)
    used = map_used(src, geo, descs, computed=computed, unread=unread, journaled=journaled)
    if sb.feature_compat & layout.COMPAT_HAS_JOURNAL and sb.journal_inum == 0:
        notes.append("the journal is on an external device, which is not copied")
    return Volume(
        fstype=fstype(sb),
        size=geo.size,
        used=used,
        copy=CopyMethod.NATIVE,
        state=state,
        label=layout.decode_label(sb.volume_name),
        uuid=layout.format_uuid(sb.uuid),
        block_size=geo.cluster_size,
        notes=tuple(notes),
    )


def fstype(sb: layout.Superblock) -> str:
    """ext4 when any feature ext3 lacks is on; else ext3 with a journal; else ext2 (as blkid)."""
    if sb.feature_incompat & ~layout.EXT3_INCOMPAT or sb.feature_ro_compat & ~layout.EXT3_RO_COMPAT:
        return "ext4"
    return "ext3" if sb.feature_compat & layout.COMPAT_HAS_JOURNAL else "ext2"


def volume_state(sb: layout.Superblock) -> tuple[VolumeState, list[str]]:
    """The most pressing state (journal replay > recorded errors > unclean) and notes on all."""
    notes: list[str] = []
    states: list[VolumeState] = []
    if sb.feature_incompat & layout.INCOMPAT_RECOVER:
        states.append(VolumeState.NEEDS_RECOVERY)
        notes.append(
            "the journal needs recovery (not cleanly unmounted): it is copied for replay, and"
            " blocks its committed transactions allocate are copied too"
        )
    if sb.state & layout.STATE_ERROR or sb.error_count:
        states.append(VolumeState.ERRORS)
        notes.append(f"the filesystem recorded errors ({sb.error_count}); run e2fsck on the copy")
    if not sb.state & layout.STATE_VALID:
        states.append(VolumeState.DIRTY)
        notes.append("the filesystem is marked not clean (mounted or not cleanly unmounted)")
    if sb.state & layout.STATE_ORPHANS:
        notes.append("orphan inodes are being recovered")
    return (states[0] if states else VolumeState.CLEAN), notes


def read_descriptors(
    src: ByteSource, geo: Geometry, table: bytes | None = None
) -> list[layout.GroupDesc]:
    """The primary group descriptor table (or ``table``, a copy of it read elsewhere),
    checksums verified and locations range-checked."""
    if table is None:
        table = _descriptor_table(src, geo)
    descs = layout.parse_descriptors(table, geo.desc_size, geo.group_count)
    if geo.has_group_csum:
        seed = layout.checksum_seed(geo.sb)
        size = geo.desc_size
        for group, desc in enumerate(descs):
            raw = table[group * size : (group + 1) * size]
            actual = layout.descriptor_checksum(geo.sb, seed, group, raw)
            if actual != desc.checksum:
                raise FilesystemError(
                    f"{src.name}: ext group descriptor {group}: checksum mismatch"
                    f" (stored {desc.checksum:#06x}, computed {actual:#06x})"
                )
    for group, desc in enumerate(descs):
        _check_locations(geo, group, desc)
    return descs


def _descriptor_table(src: ByteSource, geo: Geometry) -> bytes:
    """The descriptor blocks in order: contiguous after the superblock, or one per meta group."""
    bs = geo.block_size
    contiguous = geo.gdt_blocks if not geo.meta_bg else geo.sb.first_meta_bg
    parts = []
    if contiguous:
        start = geo.descriptor_block(0)
        parts.append(read_bytes(src, contiguous * bs, start * bs, "group descriptor table"))
    for index in range(contiguous, geo.gdt_blocks):
        block = geo.descriptor_block(index)
        if block >= geo.blocks_count:
            raise FilesystemError(
                f"{src.name}: ext meta_bg descriptor block {index} lies past the end"
            )
        parts.append(read_bytes(src, bs, block * bs, f"meta_bg descriptor block {index}"))
    return b"".join(parts)


def _check_locations(geo: Geometry, group: int, desc: layout.GroupDesc) -> None:
    low, high = geo.primary_meta_end(), geo.blocks_count
    checks = (
        ("block bitmap", desc.block_bitmap, 1),
        ("inode bitmap", desc.inode_bitmap, 1),
        ("inode table", desc.inode_table, geo.inode_blocks_per_group),
    )
    for what, block, count in checks:
        if not low <= block <= high - count:
            raise FilesystemError(
                f"{geo.name}: ext group descriptor {group}: {what} at block {block} lies outside"
                f" [{low}, {high}) (corrupt descriptor table)"
            )


def uninit_groups(geo: Geometry, descs: list[layout.GroupDesc]) -> set[int]:
    """Groups whose bitmap is computed, not read: BLOCK_UNINIT, honoured only with checksums."""
    if not geo.has_group_csum:
        return set()
    return {g for g, desc in enumerate(descs) if desc.flags & layout.BG_BLOCK_UNINIT}


def map_used(
    src: ByteSource,
    geo: Geometry,
    descs: list[layout.GroupDesc],
    *,
    computed: set[int],
    unread: set[int],
    journaled: dict[int, list[bytes]],
) -> tuple[Extent, ...]:
    """Normalized byte runs in use: bitmaps, computed uninit groups, metadata, the boot area.

    ``computed`` groups get their superblock/GDT copies added; ``unread`` groups (a subset) have
    no bitmap on disk worth reading; ``journaled`` maps blocks to copies a replay would write.
    """
    runs = _bitmap_runs(src, geo, descs, unread, journaled)
    meta: list[Extent] = [Extent(0, BOOT_AREA)]
    bs = geo.block_size
    for desc in descs:
        meta.append(Extent(desc.block_bitmap * bs, bs))
        meta.append(Extent(desc.inode_bitmap * bs, bs))
        meta.append(Extent(desc.inode_table * bs, geo.inode_blocks_per_group * bs))
    for group in computed:
        meta.extend(Extent(start * bs, count * bs) for start, count in geo.base_meta_runs(group))
    widened = extents.align(extents.normalize(meta), geo.cluster_size, geo.size)
    return extents.clip(extents.normalize([*runs, *widened]), geo.size)


def _bitmap_runs(
    src: ByteSource,
    geo: Geometry,
    descs: list[layout.GroupDesc],
    unread: set[int],
    journaled: dict[int, list[bytes]],
) -> list[Extent]:
    """Runs of set bits over all groups' bitmaps (zeros for unread groups), batch by batch."""
    nbytes = geo.clusters_per_group // 8
    total_bits = -(-(geo.blocks_count - geo.first_data_block) // geo.cluster_ratio)
    batch = max(1, BITMAP_BATCH_BYTES // nbytes)
    zero = bytes(nbytes)
    runs: list[Extent] = []
    for first in range(0, geo.group_count, batch):
        last = min(geo.group_count, first + batch)
        wanted = [descs[g].block_bitmap for g in range(first, last) if g not in unread]
        blocks = read_blocks(src, geo, wanted, "block bitmap")
        parts = []
        for group in range(first, last):
            where = descs[group].block_bitmap
            bitmap = zero if group in unread else blocks[where][:nbytes]
            for copy in journaled.get(where, ()):
                bitmap = or_bytes(bitmap, copy[:nbytes])
            parts.append(bitmap)
        count = min(total_bits - first * geo.clusters_per_group, len(parts) * nbytes * 8)
        base = geo.group_first_block(first) * geo.block_size
        runs.extend(extents.from_bitmap(b"".join(parts), geo.cluster_size, count, base))
    return runs


def or_bytes(a: bytes, b: bytes) -> bytes:
    """Bitwise OR of two equally long byte strings."""
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(len(a), "little")


def read_blocks(
    src: ByteSource, geo: Geometry, blocks: Iterable[int], what: str
) -> dict[int, bytes]:
    """Read the given blocks, one pread per stretch of adjacent blocks (flex_bg packs bitmaps)."""
    bs = geo.block_size
    out: dict[int, bytes] = {}
    order = sorted(set(blocks))
    max_run = max(1, MAX_READ_RUN // bs)
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and order[j] == order[j - 1] + 1 and j - i < max_run:
            j += 1
        data = read_bytes(src, (j - i) * bs, order[i] * bs, f"{what} block {order[i]}")
        for k in range(i, j):
            out[order[k]] = data[(k - i) * bs : (k - i + 1) * bs]
        i = j
    return out


def _watched_blocks(geo: Geometry, descs: list[layout.GroupDesc]) -> set[int]:
    """Blocks whose journaled copies matter: bitmaps, the superblock, the descriptor table."""
    watched = {d.block_bitmap for d in descs}
    watched.add(layout.SUPERBLOCK_OFFSET // geo.block_size)
    watched.update(geo.descriptor_block(i) for i in range(geo.gdt_blocks))
    return watched


def _check_journaled_layout(
    geo: Geometry, descs: list[layout.GroupDesc], journaled: dict[int, list[bytes]]
) -> set[int]:
    """Groups a replay will initialise; raise if it would move or add groups (resize)."""
    bs = geo.block_size
    sb_block = layout.SUPERBLOCK_OFFSET // bs
    for copy in journaled.get(sb_block, ()):
        offset = layout.SUPERBLOCK_OFFSET % bs
        journaled_sb = layout.parse_superblock(copy[offset : offset + layout.SUPERBLOCK_SIZE])
        layout_bits = layout.INCOMPAT_META_BG | layout.INCOMPAT_64BIT
        if any(getattr(journaled_sb, k) != getattr(geo.sb, k) for k in _LAYOUT_KEYS) or (
            (journaled_sb.feature_incompat ^ geo.sb.feature_incompat) & layout_bits
        ):
            raise FilesystemError(
                f"{geo.name}: the ext journal holds a superblock with another size or features"
                " (an interrupted resize?); its replay cannot be mapped"
            )
    initialised: set[int] = set()
    for index in range(geo.gdt_blocks):
        first = index * geo.descs_per_block
        count = min(geo.descs_per_block, geo.group_count - first)
        for copy in journaled.get(geo.descriptor_block(index), ()):
            for k, other in enumerate(layout.parse_descriptors(copy, geo.desc_size, count)):
                mine = descs[first + k]
                if other[:3] != mine[:3]:
                    raise FilesystemError(
                        f"{geo.name}: the ext journal moves the bitmaps or inode table of group"
                        f" {first + k} (an interrupted resize?); its replay cannot be mapped"
                    )
                if not other.flags & layout.BG_BLOCK_UNINIT:
                    initialised.add(first + k)
    return initialised
