"""What is on a disk: its partition table and, per partition, the volume and how it is copied.

This is the read-only first step of every job (DESIGN §2 "Probe") and all of ``clonebay probe``.
A disk with no partition table is looked at as a single volume spanning the whole device.
"""

from __future__ import annotations

from dataclasses import dataclass

from clonebay.fs import extents
from clonebay.fs.bios_raid import raid_notes
from clonebay.fs.keyring import Keyring
from clonebay.fs.probe import probe_volume
from clonebay.model import CopyMethod, Extent, Partition, PartitionTable, Volume, VolumeState
from clonebay.system.blockdev import FileSource
from clonebay.system.parttable import last_warnings, read_table


@dataclass(frozen=True)
class PartitionReport:
    """One partition and the volume found in it (None for an extended container)."""

    partition: Partition
    volume: Volume | None


@dataclass(frozen=True)
class DiskReport:
    path: str
    table: PartitionTable
    partitions: tuple[PartitionReport, ...]
    whole_disk: Volume | None  # set when the table kind is "none"
    warnings: tuple[str, ...] = ()


def _truncated(path: str, part: Partition, disk_size: int) -> Volume:
    """A partition that runs past the end of the disk (a truncated image, or a wrong table)."""
    present = max(0, disk_size - part.start)
    return Volume(
        "truncated",
        part.size,
        (Extent(0, present),) if present else (),
        CopyMethod.RAW,
        VolumeState.UNKNOWN,
        reason=f"{path}: partition {part.number} ends {part.end - disk_size} bytes past the end"
        f" of the disk ({disk_size} bytes): truncated image or wrong partition table",
    )


def inspect_disk(path: str, keys: Keyring | None = None) -> DiskReport:
    """Read ``path``'s partition table and probe every data partition (never writes); locked
    volumes that a secret in ``keys`` opens are mapped by the filesystem inside."""
    table = read_table(path)
    with FileSource(path) as disk:  # firmware RAID metadata lives in the disk's last sectors
        warnings = (*last_warnings(), *raid_notes(disk))
    if table.kind == "none":
        with FileSource(path) as src:
            return DiskReport(path, table, (), probe_volume(src, keys=keys), warnings)
    reports = []
    for part in table.partitions:
        if part.kind == "extended":
            reports.append(PartitionReport(part, None))
            continue
        if part.end > table.disk_size:
            reports.append(PartitionReport(part, _truncated(path, part, table.disk_size)))
            continue
        with FileSource(path, part.start, part.size) as src:
            reports.append(PartitionReport(part, probe_volume(src, part.type_id, keys)))
    return DiskReport(path, table, tuple(reports), None, warnings)


def outside_partitions(report: DiskReport) -> tuple[Extent, ...]:
    """Bytes of the disk outside every data partition: boot code, the post-MBR gap (GRUB's
    core.img), primary and backup GPT, EBRs of logical partitions, gaps. Copied raw; the engine
    skips the zero chunks, so this costs little."""
    table = report.table
    if report.whole_disk is not None:
        return ()
    inside = [Extent(p.start, p.size) for p in table.data_partitions()]
    return extents.subtract((Extent(0, table.disk_size),), inside)


def used_extents(report: DiskReport) -> tuple[Extent, ...]:
    """Every byte of the disk a copy must carry: the areas outside partitions and each
    volume's used extents, as disk offsets."""
    if report.whole_disk is not None:
        return report.whole_disk.used
    runs = list(outside_partitions(report))
    for pr in report.partitions:
        if pr.volume is not None:
            runs.extend(extents.shift(pr.volume.used, pr.partition.start))
    return extents.normalize(runs)
