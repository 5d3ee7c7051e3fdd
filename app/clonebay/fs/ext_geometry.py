"""Where things live in an ext2/3/4 volume: block groups, superblock backups, descriptor tables.

An ext volume is cut into block groups of ``blocks_per_group`` blocks; group ``g`` starts at
block ``first_data_block + g * blocks_per_group`` (the last group may be shorter). Some groups
carry a copy of the superblock and the group descriptor table (GDT) at their start: every group
without ``sparse_super``; groups 0, 1 and powers of 3, 5 and 7 with it; only group 0 and the two
``s_backup_bgs`` with ``sparse_super2``. With ``meta_bg`` the descriptor table is split into one
block per "meta group" of ``descs_per_block`` groups, kept in the first, second and last group of
that meta group instead (the first ``s_first_meta_bg`` blocks stay in the old place).

``Geometry.from_superblock`` checks every number the map depends on against the kernel's own
sanity checks (``ext4_fill_super``) and raises FilesystemError on anything out of range, so the
rest of the parser can do arithmetic without guarding each step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clonebay.errors import DeviceError, FilesystemError, InputError
from clonebay.fs import ext_layout as layout
from clonebay.system.blockdev import ByteSource

MAX_LOG_BLOCK_SIZE = 6  # 64 KiB blocks, the largest the kernel accepts
MAX_LOG_CLUSTER_RATIO = 16  # bigalloc clusters of up to 2^16 blocks


def read_bytes(src: ByteSource, length: int, offset: int, what: str) -> bytes:
    """``length`` bytes at ``offset`` of ``src``, or FilesystemError naming ``what``."""
    if offset < 0 or length < 0 or offset + length > src.size:
        raise FilesystemError(
            f"{src.name}: ext {what} at byte {offset} (+{length}) lies outside the volume"
            f" ({src.size} bytes); truncated partition or corrupt filesystem"
        )
    try:
        return src.pread(length, offset)
    except DeviceError:
        raise
    except InputError as exc:
        raise FilesystemError(f"{src.name}: cannot read ext {what}: {exc}") from exc


def _is_power_of(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Geometry:
    """The validated numbers of one ext volume (block numbers are absolute, in fs blocks)."""

    name: str
    sb: layout.Superblock
    block_size: int
    cluster_ratio: int  # blocks per cluster (1 without bigalloc)
    blocks_count: int
    first_data_block: int
    blocks_per_group: int
    clusters_per_group: int
    group_count: int
    inode_size: int
    inode_blocks_per_group: int
    desc_size: int
    descs_per_block: int
    gdt_blocks: int  # blocks the whole descriptor table needs
    reserved_gdt_blocks: int

    @property
    def size(self) -> int:
        return self.blocks_count * self.block_size

    @property
    def cluster_size(self) -> int:
        return self.block_size * self.cluster_ratio

    @property
    def meta_bg(self) -> bool:
        return bool(self.sb.feature_incompat & layout.INCOMPAT_META_BG)

    @property
    def has_group_csum(self) -> bool:
        """Descriptors carry checksums, so BLOCK_UNINIT is honoured (else bitmaps are read)."""
        return bool(
            self.sb.feature_ro_compat & (layout.RO_COMPAT_GDT_CSUM | layout.RO_COMPAT_METADATA_CSUM)
        )

    @classmethod
    def from_superblock(cls, sb: layout.Superblock, raw: bytes, src: ByteSource) -> Geometry:
        """Check ``sb`` (read from ``raw``) and derive the layout; FilesystemError if unsound."""

        def bad(why: str) -> FilesystemError:
            return FilesystemError(f"{src.name}: ext superblock at byte 1024: {why}")

        if sb.magic != layout.MAGIC:
            raise bad(f"bad magic {sb.magic:#06x}")
        _check_features(sb, bad)
        if sb.feature_ro_compat & layout.RO_COMPAT_METADATA_CSUM:
            if sb.checksum_type != layout.CHECKSUM_TYPE_CRC32C:
                raise bad(f"unknown metadata checksum type {sb.checksum_type}")
            actual = layout.superblock_checksum(raw)
            if actual != sb.checksum:
                raise bad(
                    f"checksum mismatch (stored {sb.checksum:#010x}, computed {actual:#010x})"
                )
        if sb.rev_level > 1:
            raise bad(f"unknown revision level {sb.rev_level}")
        if sb.log_block_size > MAX_LOG_BLOCK_SIZE:
            raise bad(f"block size 2^{10 + sb.log_block_size} is out of range")
        block_size = 1024 << sb.log_block_size
        bigalloc = bool(sb.feature_ro_compat & layout.RO_COMPAT_BIGALLOC)
        log_ratio = sb.log_cluster_size - sb.log_block_size
        if not bigalloc and log_ratio != 0:
            raise bad("cluster size differs from block size without bigalloc")
        if not 0 <= log_ratio <= MAX_LOG_CLUSTER_RATIO:
            raise bad(f"cluster size 2^{10 + sb.log_cluster_size} is out of range")
        ratio = 1 << log_ratio
        cpg = sb.clusters_per_group
        if not 8 <= cpg <= 8 * block_size or cpg % 8:
            raise bad(f"clusters per group {cpg} is out of range")
        if sb.blocks_per_group != cpg * ratio:
            raise bad(f"blocks per group {sb.blocks_per_group} does not match clusters per group")
        blocks_count = sb.blocks_count_lo
        if sb.feature_incompat & layout.INCOMPAT_64BIT:
            blocks_count |= sb.blocks_count_hi << 32
        expected_first = 1 if block_size == 1024 and not bigalloc else 0
        if sb.first_data_block != expected_first:
            raise bad(f"first data block {sb.first_data_block} for {block_size}-byte blocks")
        if blocks_count <= sb.first_data_block:
            raise bad(f"block count {blocks_count} is too small")
        size = blocks_count * block_size
        if size > src.size:
            raise FilesystemError(
                f"{src.name}: truncated partition: the ext filesystem spans {size} bytes"
                f" ({blocks_count} blocks of {block_size}) but the volume has {src.size}"
            )
        groups = _ceil_div(blocks_count - sb.first_data_block, sb.blocks_per_group)
        ipg = sb.inodes_per_group
        if not 1 <= ipg <= 8 * block_size or sb.inodes_count != ipg * groups:
            raise bad(f"inode count {sb.inodes_count} does not fit {groups} groups of {ipg}")
        inode_size = 128 if sb.rev_level == 0 else sb.inode_size
        if not 128 <= inode_size <= block_size or inode_size & (inode_size - 1):
            raise bad(f"inode size {inode_size} is out of range")
        desc_size = layout.DESC_MIN_SIZE
        if sb.feature_incompat & layout.INCOMPAT_64BIT:
            desc_size = sb.desc_size
            if not layout.DESC_64BIT_MIN_SIZE <= desc_size <= min(1024, block_size) or (
                desc_size & (desc_size - 1)
            ):
                raise bad(f"group descriptor size {desc_size} is out of range")
        dpb = block_size // desc_size
        gdt_blocks = _ceil_div(groups, dpb)
        if sb.reserved_gdt_blocks > block_size // 4:
            raise bad(f"{sb.reserved_gdt_blocks} reserved GDT blocks is insanely large")
        if sb.feature_incompat & layout.INCOMPAT_META_BG and sb.first_meta_bg > gdt_blocks:
            raise bad(f"first meta block group {sb.first_meta_bg} is past the descriptor table")
        sparse2 = sb.feature_compat & layout.COMPAT_SPARSE_SUPER2
        if sparse2 and max(sb.backup_bg0, sb.backup_bg1) >= groups:
            raise bad("sparse_super2 backup group is past the last group")
        return cls(
            name=src.name,
            sb=sb,
            block_size=block_size,
            cluster_ratio=ratio,
            blocks_count=blocks_count,
            first_data_block=sb.first_data_block,
            blocks_per_group=sb.blocks_per_group,
            clusters_per_group=cpg,
            group_count=groups,
            inode_size=inode_size,
            inode_blocks_per_group=_ceil_div(ipg * inode_size, block_size),
            desc_size=desc_size,
            descs_per_block=dpb,
            gdt_blocks=gdt_blocks,
            reserved_gdt_blocks=sb.reserved_gdt_blocks,
        )

    def group_first_block(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def group_base(self, group: int) -> int:
        """Block holding the group's superblock copy (block 1 for group 0 with 1 KiB bigalloc)."""
        first = self.group_first_block(group)
        return 1 if first == 0 and self.block_size == 1024 else first

    def has_super(self, group: int) -> bool:
        """Does ``group`` start with a superblock (and, outside meta_bg, a GDT) copy?"""
        if group == 0:
            return True
        sb = self.sb
        if sb.feature_compat & layout.COMPAT_SPARSE_SUPER2:
            return group in (sb.backup_bg0, sb.backup_bg1)
        if group == 1 or not sb.feature_ro_compat & layout.RO_COMPAT_SPARSE_SUPER:
            return True
        if group % 2 == 0:
            return False
        return _is_power_of(group, 3) or _is_power_of(group, 5) or _is_power_of(group, 7)

    @property
    def old_gdt_blocks(self) -> int:
        """Descriptor blocks kept after each superblock copy (all of them without meta_bg)."""
        return self.sb.first_meta_bg if self.meta_bg else self.gdt_blocks

    def descriptor_block(self, index: int) -> int:
        """Block number of the primary copy of descriptor block ``index``."""
        if not self.meta_bg or index < self.sb.first_meta_bg:
            return self.group_base(0) + 1 + index
        group = index * self.descs_per_block
        return self.group_base(group) + int(self.has_super(group))

    def primary_meta_end(self) -> int:
        """First block after group 0's superblock, descriptor table and reserved GDT blocks."""
        return self.group_base(0) + 1 + self.old_gdt_blocks + self.reserved_gdt_blocks

    def base_meta_runs(self, group: int) -> list[tuple[int, int]]:
        """(first block, count) runs of superblock/GDT copies at the start of ``group``.

        This is what the kernel (ext4_num_base_meta_blocks) and e2fsprogs
        (ext2fs_reserve_super_and_bgd) mark in a BLOCK_UNINIT group's bitmap; where the two
        differ (meta_bg with reserved GDT blocks) the union is returned.
        """
        base = self.group_base(group)
        runs: list[tuple[int, int]] = []
        has_super = self.has_super(group)
        if has_super:
            runs.append((base, 1))
        if not self.meta_bg or group < self.sb.first_meta_bg * self.descs_per_block:
            if has_super:
                runs.append((base + 1, self.old_gdt_blocks + self.reserved_gdt_blocks))
        elif group % self.descs_per_block in (0, 1, self.descs_per_block - 1):
            runs.append((base + int(has_super), 1))
        return [(start, min(count, self.blocks_count - start)) for start, count in runs]


def _check_features(sb: layout.Superblock, bad: Callable[[str], FilesystemError]) -> None:
    """Refuse feature bits whose meaning for the block map we do not know."""
    if sb.feature_incompat & layout.INCOMPAT_JOURNAL_DEV:
        raise bad("this is an external journal device, not a filesystem")
    unknown = sb.feature_incompat & ~layout.INCOMPAT_SUPPORTED
    if unknown:
        raise bad(f"unsupported incompatible feature flags {unknown:#x}")
    unknown = sb.feature_ro_compat & ~layout.RO_COMPAT_SUPPORTED
    if unknown:
        raise bad(f"unsupported read-only-compatible feature flags {unknown:#x}")
