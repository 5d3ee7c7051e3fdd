"""The Plan: where every source partition goes on the target, at what size, before any write.

A Plan maps each data partition of the source to a start and size on the target, decides which
grow, and lists the fixups that follow. Growth modes for a target larger than the source:

- ``proportional`` (default): the extra space is shared among the growable partitions in
  proportion to their size; the ESP, BIOS boot, Microsoft reserved and recovery partitions,
  partitions under 64 MiB, swap, FAT, and raw volumes (whose filesystem cannot be grown) keep
  their size;
- ``last``: all extra space goes to the last growable partition;
- ``none``: the layout is copied as is (a GPT's backup header still moves to the new end).

Partitions keep their order and the gaps between them (an EBR sits in the gap before each
logical partition); starts and sizes stay on 1 MiB boundaries where the source's were. A target
smaller than the source is refused here, before anything is written.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from clonebay.engine.inspect import DiskReport
from clonebay.errors import TargetTooSmallError, UsageError
from clonebay.model import CopyMethod, Partition, PartitionTable, Volume
from clonebay.units import human_size

MIB = 1 << 20
GPT_TAIL_SECTORS = 33  # backup entry array (32 sectors of 128 x 128 bytes) + backup header
SMALL = 64 << 20  # partitions under this keep their size (tiny data or system areas)
GROWABLE_FS = {"ext2", "ext3", "ext4", "ntfs"}  # FAT: see engine/layout/fixups.py
FIXED_TYPES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",  # EFI system
    "21686148-6449-6E6F-744E-656564454649",  # BIOS boot
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",  # Microsoft reserved
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",  # Windows recovery
    "0xef",
    "0x27",
}


class Grow(enum.Enum):
    PROPORTIONAL = "proportional"
    LAST = "last"
    NONE = "none"


@dataclass(frozen=True)
class Move:
    """One source partition and its place on the target."""

    number: int
    source: Partition
    target_start: int
    target_size: int
    volume: Volume | None
    grow_fs: bool  # a filesystem grow follows (the partition grew and its fs can grow)

    @property
    def moved(self) -> bool:
        return self.target_start != self.source.start

    @property
    def grown(self) -> bool:
        return self.target_size > self.source.size


@dataclass(frozen=True)
class Plan:
    source_size: int
    target_size: int
    grow: Grow
    source_table: PartitionTable
    target_table: PartitionTable
    moves: tuple[Move, ...]
    fixups: tuple[str, ...]

    @property
    def same_layout(self) -> bool:
        return all(not m.moved and not m.grown for m in self.moves)

    def text(self) -> str:
        rows = [
            f"plan: {self.source_table.kind} disk {human_size(self.source_size)} -> target"
            f" {human_size(self.target_size)}, grow {self.grow.value}",
            "  #   SOURCE START  SOURCE SIZE   TARGET START  TARGET SIZE   FS        COPY",
        ]
        for m in self.moves:
            vol = m.volume
            copy = vol.copy.value if vol else "-"
            rows.append(
                f"  {m.number:<3} {human_size(m.source.start):<13} {human_size(m.source.size):<13}"
                f" {human_size(m.target_start):<13} {human_size(m.target_size):<13}"
                f" {(vol.fstype if vol else '-'):<9} {copy}"
                + (" grown" if m.grown else "")
                + (" moved" if m.moved else "")
            )
        rows.extend(f"  then: {f}" for f in self.fixups)
        return "\n".join(rows)


def _usable_end(table: PartitionTable, disk_size: int) -> int:
    if table.kind == "gpt":
        return disk_size - (GPT_TAIL_SECTORS + 1) * table.sector_size
    return disk_size


def _growable(part: Partition, volume: Volume | None) -> bool:
    if volume is None or volume.copy is not CopyMethod.NATIVE:
        return False
    if volume.fstype not in GROWABLE_FS or part.type_id.upper() in FIXED_TYPES:
        return False
    if part.type_id.lower() in FIXED_TYPES or "esp" in part.flags or "bios_grub" in part.flags:
        return False
    return part.size >= SMALL


def _shares(moves: list[tuple[Partition, Volume | None]], extra: int, grow: Grow) -> list[int]:
    growable = [_growable(p, v) for p, v in moves]
    if grow is Grow.NONE or extra < MIB or not any(growable):
        return [0] * len(moves)
    if grow is Grow.LAST:
        last = max(i for i, g in enumerate(growable) if g)
        return [extra // MIB * MIB if i == last else 0 for i in range(len(moves))]
    weight = sum(p.size for (p, _), g in zip(moves, growable, strict=True) if g)
    return [
        extra * p.size // weight // MIB * MIB if g else 0
        for (p, _), g in zip(moves, growable, strict=True)
    ]


def make_plan(report: DiskReport, target_size: int, grow: Grow = Grow.PROPORTIONAL) -> Plan:
    """Lay the source's partitions out on a target of ``target_size`` bytes."""
    volumes = {pr.partition.number: pr.volume for pr in report.partitions}
    return plan_layout(report.table, volumes, target_size, grow, report.path)


def plan_layout(
    table: PartitionTable,
    volumes: Mapping[int, Volume | None],
    target_size: int,
    grow: Grow,
    where: str,
) -> Plan:
    """Lay ``table``'s partitions (with the volumes found in them) out on a target."""
    if table.kind == "none":
        raise UsageError(f"{where} has no partition table: clone it as a single volume")
    source_end = _usable_end(table, table.disk_size)
    target_end = _usable_end(table, target_size)
    data = [(p, volumes.get(p.number)) for p in table.partitions if p.kind != "extended"]
    data.sort(key=lambda pv: pv[0].start)
    last_end = max((p.end for p, _ in data), default=0)
    if target_end < last_end:
        raise TargetTooSmallError(
            f"the target holds {human_size(target_size)} ({target_size} bytes); the source's"
            f" partitions need {human_size(last_end + table.disk_size - source_end)}"
            " (shrinking onto a smaller disk is not available yet); nothing was written"
        )
    shares = _shares(data, max(0, target_end - source_end), grow)
    moves: list[Move] = []
    shift = 0
    for (part, vol), share in zip(data, shares, strict=True):
        moves.append(Move(part.number, part, part.start + shift, part.size + share, vol, share > 0))
        shift += share
    target_table = _target_table(table, target_size, moves)
    fixups = _fixups(table, target_size, moves)
    return Plan(table.disk_size, target_size, grow, table, target_table, tuple(moves), fixups)


def _target_table(table: PartitionTable, target_size: int, moves: list[Move]) -> PartitionTable:
    by_number = {m.number: m for m in moves}
    parts = []
    for part in table.partitions:
        if part.number in by_number:
            m = by_number[part.number]
            parts.append(replace(part, start=m.target_start, size=m.target_size))
        else:  # the extended container: from its old head room to the last logical's end
            logicals = [m for m in moves if m.source.kind == "logical"]
            head = min(m.source.start for m in logicals) - part.start if logicals else 0
            tail = part.end - max(m.source.end for m in logicals) if logicals else 0
            start = min(m.target_start for m in logicals) - head if logicals else part.start
            end = (
                max(m.target_start + m.target_size for m in logicals) + tail
                if logicals
                else part.end
            )
            parts.append(replace(part, start=start, size=end - start))
    last_usable = _usable_end(table, target_size) if table.kind == "gpt" else 0
    return replace(table, disk_size=target_size, partitions=tuple(parts), last_usable=last_usable)


def _fixups(table: PartitionTable, target_size: int, moves: list[Move]) -> tuple[str, ...]:
    out = []
    for m in moves:
        fs = m.volume.fstype if m.volume else ""
        if m.moved and fs in ("ntfs", "fat12", "fat16", "fat32"):
            out.append(f"p{m.number}: patch hidden sectors in the {fs} boot sectors")
        if m.grow_fs:
            out.append(f"p{m.number}: grow {fs} to {human_size(m.target_size)}")
    if table.kind == "gpt" and target_size != table.disk_size:
        out.append("write the GPT backup header at the new end of the disk")
    return tuple(out)
