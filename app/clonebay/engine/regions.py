"""A source disk as a list of regions: what a save or clone reads, and where each piece goes.

A region is a byte range of the source disk with the runs of it that must be copied:

- ``pN`` — partition N, its filesystem's used extents (or all of it, for a raw volume);
- ``areaK`` — a stretch outside every partition (boot code and partition table at the start, the
  post-MBR gap where GRUB keeps core.img, EBRs, the backup GPT at the end): copied whole, zero
  chunks skipped;
- ``disk`` — a device with no partition table, probed as one volume.

Regions come in disk order. Restore writes the raw areas (which hold the partition table) last.
"""

from __future__ import annotations

from dataclasses import dataclass

from clonebay.engine.inspect import DiskReport, outside_partitions
from clonebay.errors import UsageError
from clonebay.fs import extents
from clonebay.imaging.source_disk import TableInfo
from clonebay.model import CopyMethod, Extent, Volume


@dataclass(frozen=True)
class SourceRegion:
    """One region of a source disk and the runs of it (region-relative) to copy."""

    name: str
    kind: str  # "partition", "raw-area", "disk"
    disk_offset: int
    size: int
    runs: tuple[Extent, ...]
    volume: Volume | None = None
    number: int = 0  # partition number, 0 for areas and whole disks

    @property
    def copy(self) -> str:
        return self.volume.copy.value if self.volume else CopyMethod.RAW.value

    @property
    def used_bytes(self) -> int:
        return extents.total(self.runs)


def source_regions(report: DiskReport, partition: int | None = None) -> list[SourceRegion]:
    """Regions of ``report``'s disk in disk order; only partition ``partition`` when given."""
    table = report.table
    if report.whole_disk is not None:
        vol = report.whole_disk
        return [
            SourceRegion(
                "disk", "disk", 0, table.disk_size, extents.clip(vol.used, table.disk_size), vol
            )
        ]
    regions: list[SourceRegion] = []
    for pr in report.partitions:
        if pr.volume is None:  # extended container: its EBRs are in the raw areas
            continue
        part, vol = pr.partition, pr.volume
        if partition is not None and part.number != partition:
            continue
        size = min(part.size, max(0, table.disk_size - part.start))
        regions.append(
            SourceRegion(
                f"p{part.number}",
                "partition",
                part.start,
                size,
                extents.clip(vol.used, size),
                vol,
                part.number,
            )
        )
    if partition is not None:
        if not regions:
            numbers = ", ".join(str(pr.partition.number) for pr in report.partitions) or "none"
            raise UsageError(f"{report.path} has no partition {partition} (partitions: {numbers})")
        return regions
    for k, area in enumerate(outside_partitions(report)):
        regions.append(
            SourceRegion(f"area{k}", "raw-area", area.start, area.length, (Extent(0, area.length),))
        )
    return sorted(regions, key=lambda r: r.disk_offset)


def table_as_data(report: DiskReport) -> TableInfo:
    """The partition table as the image manifest records it."""
    return TableInfo.from_model(report.table)
