"""What a target can hold, decided in the Plan before the first write.

- **GPT usable end** (UEFI 2.10 §5.3.2): the backup header is in the disk's last LBA and its entry
  array just before it. sgdisk and sfdisk write 128 entries of 128 bytes (16 KiB), so the usable
  area of a disk of N sectors ends at sector N - 1 - 16384 / sector_size: N - 33 with 512-byte
  sectors, N - 5 with 4096-byte ones. The source's end is read from its own header (last usable
  LBA + 1), never worked out: ``sgdisk -n 1:2048:0`` ends a partition exactly there.
- **MBR limits**: an entry's start and size are 32-bit sector counts (the extended container's
  too; a logical partition's start is relative to it), so every partition must start and end
  before sector 2^32 - 1: 2 TiB with 512-byte sectors. Growth stops there; the rest of a larger
  disk stays unused.
- **Logical sector size**: partition tables count sectors, and NTFS and FAT record bytes per
  sector and their start (hidden sectors) in their boot sectors. Only a partition whose start is a
  whole number of target sectors and whose filesystem is ext with blocks a multiple of the target
  sector (the kernel needs block size >= logical sector size) can move between sector sizes.
- **Truncated sources**: a partition that runs past the end of its disk (a cut image, a wrong
  table) is refused unless the user allows it; its missing tail is then zeroed on the target.
"""

from __future__ import annotations

from collections.abc import Sequence

from clonebay.model import CopyMethod, Partition, PartitionTable, Volume
from clonebay.units import human_size

GPT_ENTRY_ARRAY = 128 * 128  # bytes: 128 entries of 128 bytes, as sgdisk and sfdisk write
MBR_MAX_SECTORS = (1 << 32) - 1  # the largest start or size an MBR entry can hold
BOOT_SECTOR_FS = ("ntfs", "fat12", "fat16", "fat32")  # record bytes per sector and hidden sectors
EXT_FS = ("ext2", "ext3", "ext4")


def gpt_tail(sector: int) -> int:
    """Bytes at the end of a GPT disk that no partition may use: backup entries and header."""
    return (1 + -(-GPT_ENTRY_ARRAY // sector)) * sector


def gpt_first_usable(sector: int) -> int:
    """The first byte a partition may use after the protective MBR, header and entries."""
    return (2 + -(-GPT_ENTRY_ARRAY // sector)) * sector


def source_usable_end(table: PartitionTable) -> int:
    """Where the source's usable area ends: its GPT header's last usable LBA + 1 (as bytes), or
    the end of an MBR disk."""
    if table.kind == "gpt":
        return table.last_usable or table.disk_size - gpt_tail(table.sector_size)
    return table.disk_size


def target_usable_end(kind: str, target_size: int, sector: int) -> int:
    """Where partitions must end on a target of ``target_size`` bytes with ``sector``-byte
    sectors (an MBR's 2^32-sector limit is not applied here: see ``mbr_end``)."""
    whole = target_size // sector * sector
    return whole - gpt_tail(sector) if kind == "gpt" else whole


def mbr_end(sector: int) -> int:
    """The byte where an MBR partition must end at the latest (start and size < 2^32)."""
    return MBR_MAX_SECTORS * sector


def mbr_problems(table: PartitionTable) -> list[str]:
    """Partitions of an MBR table whose start or size does not fit 32 bits (none for GPT)."""
    if table.kind != "msdos":
        return []
    sector = table.sector_size
    out = []
    for part in sorted(table.partitions, key=lambda p: p.number):
        start, size = part.start // sector, part.size // sector
        if start > MBR_MAX_SECTORS or size > MBR_MAX_SECTORS:
            what = "start" if start > MBR_MAX_SECTORS else "size"
            out.append(
                f"p{part.number} would have a {what} of {max(start, size)} sectors (at most"
                f" {MBR_MAX_SECTORS} fit an MBR entry)"
            )
    return out


def truncated_parts(table: PartitionTable) -> list[tuple[Partition, int]]:
    """Data partitions that run past the end of the source disk, with the missing byte count."""
    size = table.disk_size
    return [(p, p.end - size) for p in table.data_partitions() if p.end > size]


def truncation_refusal(where: str, table: PartitionTable) -> str:
    """The refusal for a source with truncated partitions (empty when there are none)."""
    cut = truncated_parts(table)
    if not cut:
        return ""
    parts = "; ".join(
        f"p{p.number} runs {missing} bytes ({human_size(missing)}) past its end"
        for p, missing in cut
    )
    return (
        f"{where} holds {table.disk_size} bytes, but {parts} (a truncated image or a wrong"
        " partition table). Refusing; nothing was written. --allow-truncated copies what is"
        " there and writes zeros for the missing bytes"
    )


def sector_problems(
    parts: Sequence[tuple[Partition, Volume | None]], source: int, target: int
) -> list[str]:
    """Why each of ``parts`` (partitions, with the volume in each) cannot move from
    ``source``-byte to ``target``-byte logical sectors; empty when all of them can."""
    out = []
    for part, vol in parts:
        name = "volume" if part.number == 0 else f"p{part.number}"
        fs = vol.fstype if vol else "extended" if part.kind == "extended" else "unknown"
        why = unconvertible(vol, source, target) if part.kind != "extended" else ""
        if not why and part.start % target:
            why = f"starts at byte {part.start}, which is not on a {target}-byte sector"
        if not why and vol is not None and vol.size > part.size // target * target:
            why = f"fills {vol.size} bytes, more than whole {target}-byte sectors of it hold"
        if why:
            out.append(f"{name} ({fs}) {why}")
    return out


def unconvertible(vol: Volume | None, source: int, target: int) -> str:
    """Why ``vol`` cannot live on ``target``-byte sectors (empty when it can)."""
    if vol is None:
        return "was not looked at, so whether it can live on other sectors is unknown"
    if vol.fstype in BOOT_SECTOR_FS:
        return (
            f"records {source}-byte sectors in its boot sector; the target has {target}-byte"
            " sectors"
        )
    if vol.fstype not in EXT_FS or vol.copy is not CopyMethod.NATIVE:
        detail = f" ({vol.reason})" if vol.reason else ""
        return f"is copied raw{detail}: whether it can live on {target}-byte sectors is unknown"
    if vol.block_size < target or vol.block_size % target:
        return f"has {vol.block_size}-byte blocks; on {target}-byte sectors it could not be mounted"
    return ""


def round_down(value: int, unit: int) -> int:
    return value // unit * unit


def round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit
