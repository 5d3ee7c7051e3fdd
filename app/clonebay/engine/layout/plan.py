"""The Plan: where every source partition goes on the target, at what size, before any write.

A Plan maps each data partition of the source to a start and size on the target, decides which
grow, and lists the fixups that follow and the notes a technician must see. Growth modes for a
target larger than the source:

- ``proportional`` (default): the extra space is shared among the growable partitions in
  proportion to their size; the ESP, BIOS boot, Microsoft reserved and recovery partitions,
  partitions under 64 MiB, swap, FAT, raw volumes (whose filesystem cannot be grown) and volumes
  that must not be edited (hibernated, encrypted) keep their size;
- ``last``: all extra space goes to the last growable partition;
- ``none``: the layout is copied as is (a GPT's backup header still moves to the new end).

Partitions keep their order and the gaps between them (an EBR sits in the gap before each
logical partition); starts and sizes stay on 1 MiB boundaries where the source's were. Every
refusal happens here, before anything is written: a target smaller than the source, an MBR
layout that 32-bit sector fields cannot express, another logical sector size than the volumes
can live on, a source whose partitions run past its end (engine/layout/limits.py).

Volumes the copy must not edit (``Move.editable`` False: hibernated or encrypted, or copied raw)
get no hidden-sector or growth fixups; every volume copied raw, dirty, hibernated or encrypted is
named in ``Plan.notes`` with the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from clonebay.engine.inspect import DiskReport
from clonebay.engine.layout import limits, shrink
from clonebay.engine.layout.states import editable, region_name, state_note
from clonebay.errors import SafetyError, TargetTooSmallError, UsageError
from clonebay.model import CopyMethod, Extent, Partition, PartitionTable, Volume
from clonebay.units import human_size

MIB = 1 << 20
SMALL = 64 << 20  # partitions under this keep their size (tiny data or system areas)
GROWABLE_FS = {"ext2", "ext3", "ext4", "ntfs"}  # FAT: see engine/layout/fixups.py
HIDDEN_SECTOR_FS = ("ntfs", "fat12", "fat16", "fat32")
FIXED_TYPES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",  # EFI system
    "21686148-6449-6E6F-744E-656564454649",  # BIOS boot
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",  # Microsoft reserved
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",  # Windows recovery
    "0xef",
    "0x27",
}


class NeedsShrinkError(TargetTooSmallError):
    """The target is smaller than the source's partitions: the layout fits only if some
    filesystems shrink. Callers that can shrink (clone, restore of a directory image) catch it,
    measure the minimum of each partition in ``candidates`` and plan again with them."""

    def __init__(self, message: str, candidates: tuple[int, ...]) -> None:
        super().__init__(message)
        self.candidates = candidates


class Grow(enum.Enum):
    PROPORTIONAL = "proportional"
    LAST = "last"
    NONE = "none"


@dataclass(frozen=True)
class Move:
    """One source partition (number 0: the single volume of a device with no table) and its
    place on the target."""

    number: int
    source: Partition
    target_start: int
    target_size: int
    volume: Volume | None
    grow_fs: bool  # a filesystem grow follows (the partition grew and its fs can grow)
    editable: bool = True  # fixups may write into the volume (hidden sectors, growth)
    minimum: int = 0  # shrunk: the least it may have (its filesystem's minimum and headroom)

    @property
    def name(self) -> str:
        return region_name(self.number)

    @property
    def moved(self) -> bool:
        return self.target_start != self.source.start

    @property
    def grown(self) -> bool:
        return self.target_size > self.source.size

    @property
    def shrunk(self) -> bool:
        """Its filesystem is resized smaller (engine/shrink/) before it is copied."""
        return self.minimum > 0


@dataclass(frozen=True)
class Plan:
    """The whole layout decision. ``sector_size`` is the source's logical sector size and
    ``target_sector_size`` the target's (the target table's); they differ only when
    ``convert_sectors`` says every volume can live on the target's sectors and the partition
    table is rewritten in them. ``zero_tails`` are target byte ranges to zero (the missing tails
    of a truncated source's partitions); ``notes`` name every volume copied raw, dirty,
    hibernated or encrypted, and other limits, for the job's result."""

    source_size: int
    target_size: int
    grow: Grow
    source_table: PartitionTable
    target_table: PartitionTable
    moves: tuple[Move, ...]
    fixups: tuple[str, ...]
    convert_sectors: bool = False
    zero_tails: tuple[Extent, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def sector_size(self) -> int:
        return self.source_table.sector_size

    @property
    def target_sector_size(self) -> int:
        return self.target_table.sector_size

    @property
    def same_layout(self) -> bool:
        """Every partition where it was, at its size, in the same sectors: the source's table
        (and the rest of its head area) can be copied as it is."""
        return not self.convert_sectors and all(
            not m.moved and not m.grown and not m.shrunk for m in self.moves
        )

    @property
    def shrinks(self) -> tuple[Move, ...]:
        return tuple(m for m in self.moves if m.shrunk)

    def text(self) -> str:
        sectors = (
            f", sectors {self.sector_size} -> {self.target_sector_size} B"
            if self.convert_sectors
            else ""
        )
        rows = [
            f"plan: {self.source_table.kind} disk {human_size(self.source_size)} -> target"
            f" {human_size(self.target_size)}, grow {self.grow.value}{sectors}",
            "  #       SOURCE START  SOURCE SIZE   TARGET START  TARGET SIZE   FS        COPY",
        ]
        for m in self.moves:
            vol = m.volume
            copy = vol.copy.value if vol else "-"
            rows.append(
                f"  {m.name:<7} {human_size(m.source.start):<13} {human_size(m.source.size):<13}"
                f" {human_size(m.target_start):<13} {human_size(m.target_size):<13}"
                f" {(vol.fstype if vol else '-'):<9} {copy}"
                + (" grown" if m.grown else "")
                + (f" shrunk (least {human_size(m.minimum)})" if m.shrunk else "")
                + (" moved" if m.moved else "")
            )
        rows.extend(f"  then: {f}" for f in self.fixups)
        rows.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(rows)


def _growable(part: Partition, volume: Volume | None) -> bool:
    if volume is None or volume.copy is not CopyMethod.NATIVE or not editable(volume):
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


def make_plan(
    report: DiskReport,
    target_size: int,
    grow: Grow = Grow.PROPORTIONAL,
    *,
    target_sector_size: int | None = None,
    allow_truncated: bool = False,
    minimums: Mapping[int, int] | None = None,
) -> Plan:
    """Lay the source's partitions out on a target of ``target_size`` bytes whose logical
    sectors are ``target_sector_size`` bytes (None: the source's, as for an image file)."""
    volumes = {pr.partition.number: pr.volume for pr in report.partitions}
    return plan_layout(
        report.table,
        volumes,
        target_size,
        grow,
        report.path,
        target_sector_size=target_sector_size,
        allow_truncated=allow_truncated,
        minimums=minimums,
    )


def plan_layout(
    table: PartitionTable,
    volumes: Mapping[int, Volume | None],
    target_size: int,
    grow: Grow,
    where: str,
    *,
    target_sector_size: int | None = None,
    allow_truncated: bool = False,
    minimums: Mapping[int, int] | None = None,
) -> Plan:
    """Lay ``table``'s partitions (with the volumes found in them) out on a target. When the
    target is too small, NeedsShrinkError unless ``minimums`` (bytes, by partition number)
    says how far the shrinkable ones can go (engine/layout/shrink.py); ``grow`` then says how
    the rest is shared (NONE: like PROPORTIONAL)."""
    if table.kind == "none":
        raise UsageError(f"{where} has no partition table: clone it as a single volume")
    cut = limits.truncation_refusal(where, table)
    if cut and not allow_truncated:
        raise SafetyError(cut)
    sector = table.sector_size
    tsector = target_sector_size or sector
    data = _data(table, volumes)
    notes: list[str] = []
    if tsector != sector:
        notes.append(_check_sectors(table, data, tsector, where))
    sizes = [limits.round_down(p.size, tsector) for p, _ in data]
    last_end = max((p.start + s for (p, _), s in zip(data, sizes, strict=True)), default=0)
    target_end = limits.target_usable_end(table.kind, target_size, tsector)
    if target_end < last_end and minimums is None:
        needed = last_end + target_size - target_end
        raise NeedsShrinkError(
            f"the target holds {human_size(target_size)} ({target_size} bytes); the source's"
            f" partitions need {human_size(needed)} ({needed} bytes); nothing was written",
            shrink_candidates(table, volumes),
        )
    if target_end < last_end and minimums is not None:
        return _shrink_plan(
            table,
            data,
            target_size,
            tsector,
            sizes=sizes,
            grow=grow,
            where=where,
            minimums=minimums,
            notes=notes,
        )
    room_end = target_end
    if table.kind == "msdos" and target_end > limits.mbr_end(tsector):
        room_end = max(limits.mbr_end(tsector), last_end)
        if grow is not Grow.NONE:
            notes.append(
                f"MBR: partitions must end within {limits.MBR_MAX_SECTORS} sectors"
                f" ({human_size(limits.mbr_end(tsector))}); the last"
                f" {human_size(target_size - room_end)} of the target stay unused (GPT has no such"
                " limit)"
            )
    shares = _shares(data, max(0, room_end - limits.source_usable_end(table)), grow)
    moves: list[Move] = []
    shift = 0
    for (part, vol), size, share in zip(data, sizes, shares, strict=True):
        start = part.start + shift
        moves.append(Move(part.number, part, start, size + share, vol, share > 0, editable(vol)))
        shift += share
    target_table = _target_table(table, target_size, moves, tsector, where)
    notes.extend(n for m in moves if (n := state_note(m.name, m.volume)))
    tails = _zero_tails(table, moves)
    notes.extend(
        f"{m.name}: its last {t.length} bytes ({human_size(t.length)}) lie past the end of"
        f" {where}: they are zeros on the target"
        for m, t in tails
    )
    return Plan(
        table.disk_size,
        target_size,
        grow,
        table,
        target_table,
        tuple(moves),
        _fixups(table, target_size, moves, tsector != sector),
        convert_sectors=tsector != sector,
        zero_tails=tuple(t for _, t in tails),
        notes=tuple(n for n in notes if n),
    )


def _data(
    table: PartitionTable, volumes: Mapping[int, Volume | None]
) -> list[tuple[Partition, Volume | None]]:
    data = [(p, volumes.get(p.number)) for p in table.partitions if p.kind != "extended"]
    return sorted(data, key=lambda pv: pv[0].start)


def shrink_candidates(
    table: PartitionTable, volumes: Mapping[int, Volume | None]
) -> tuple[int, ...]:
    """The partitions whose filesystems may shrink (engine/layout/shrink.py says which)."""
    fixed = {t.upper() for t in FIXED_TYPES}
    return tuple(p.number for p, v in _data(table, volumes) if not shrink.why_fixed(p, v, fixed))


def smallest_size(
    table: PartitionTable, volumes: Mapping[int, Volume | None], minimums: Mapping[int, int]
) -> int:
    """The smallest disk (whole MiB) that holds ``table``'s layout with every partition in
    ``minimums`` at its floor: what ``save --shrink`` records."""
    data = _data(table, volumes)
    sizes = [limits.round_down(p.size, table.sector_size) for p, _ in data]
    slots = shrink.slots_for(data, sizes, minimums, {t.upper() for t in FIXED_TYPES})
    _, end = shrink.place(slots, [s.floor for s in slots])
    tail = limits.gpt_tail(table.sector_size) if table.kind == "gpt" else 0
    return limits.round_up(end + tail, MIB)


def _shrink_plan(
    table: PartitionTable,
    data: list[tuple[Partition, Volume | None]],
    target_size: int,
    tsector: int,
    *,
    sizes: list[int],
    grow: Grow,
    where: str,
    minimums: Mapping[int, int],
    notes: list[str],
) -> Plan:
    """The layout on a target smaller than the source's partitions (engine/layout/shrink.py)."""
    target_end = limits.target_usable_end(table.kind, target_size, tsector)
    if table.kind == "msdos":
        target_end = min(target_end, limits.mbr_end(tsector))
    fixed = {t.upper() for t in FIXED_TYPES}
    slots = shrink.slots_for(data, sizes, minimums, fixed)
    new_sizes = shrink.shrink_sizes(slots, (target_size, target_end), grow is Grow.LAST, where)
    starts, _ = shrink.place(slots, new_sizes)
    moves = []
    for (part, vol), slot, start, size in zip(data, slots, starts, new_sizes, strict=True):
        low = slot.floor if size < slot.size else 0
        moves.append(Move(part.number, part, start, size, vol, False, editable(vol), low))
    target_table = _target_table(table, target_size, moves, tsector, where)
    notes.extend(n for m in moves if (n := state_note(m.name, m.volume)))
    return Plan(
        table.disk_size,
        target_size,
        grow,
        table,
        target_table,
        tuple(moves),
        _fixups(table, target_size, moves, tsector != table.sector_size),
        convert_sectors=tsector != table.sector_size,
        notes=tuple(n for n in notes if n),
    )


def volume_plan(
    report: DiskReport,
    target_size: int,
    grow: Grow = Grow.PROPORTIONAL,
    *,
    target_sector_size: int | None = None,
) -> Plan:
    """A device without a partition table (a partition, or a bare filesystem) as one volume,
    Move number 0 ("volume"), placed at the target's byte 0."""
    vol = report.whole_disk
    if vol is None:
        raise UsageError(f"{report.path} holds a partition table: plan it as a disk")
    size, sector = report.table.disk_size, report.table.sector_size
    tsector = target_sector_size or sector
    if target_size < size:
        raise TargetTooSmallError(
            f"the target holds {human_size(target_size)} ({target_size} bytes); the volume of"
            f" {report.path} needs {human_size(size)} ({size} bytes); nothing was written"
        )
    part = Partition(0, 0, size)
    notes = [state_note("volume", vol)]
    if tsector != sector:
        problems = limits.sector_problems([(part, vol)], sector, tsector)
        if problems:
            raise SafetyError(
                f"{report.path} has {sector}-byte sectors, the target {tsector}-byte:"
                f" {'; '.join(problems)}: refusing; nothing was written"
            )
        notes.append(
            f"volume: {vol.fstype} with {vol.block_size}-byte blocks can be read on the target's"
            f" {tsector}-byte sectors (the source has {sector}-byte ones)"
        )
    grows = (
        grow is not Grow.NONE and target_size > size and vol.fstype in GROWABLE_FS and editable(vol)
    )
    new_size = limits.round_down(target_size, tsector) if grows else size
    move = Move(0, part, 0, new_size, vol, grows, editable(vol))
    fix = (f"volume: grow {vol.fstype} to fill the target",) if grows else ()
    return Plan(
        size,
        target_size,
        grow,
        report.table,
        replace(report.table, sector_size=tsector),
        (move,),
        fix,
        convert_sectors=tsector != sector,
        notes=tuple(n for n in notes if n),
    )


def _check_sectors(
    table: PartitionTable, data: list[tuple[Partition, Volume | None]], tsector: int, where: str
) -> str:
    """Refuse unless every partition can move to ``tsector``-byte sectors; the note if so."""
    sector = table.sector_size
    extended = [(p, None) for p in table.partitions if p.kind == "extended"]
    problems = limits.sector_problems([*data, *extended], sector, tsector)
    if problems:
        raise SafetyError(
            f"{where} has {sector}-byte sectors, the target {tsector}-byte:"
            f" {'; '.join(problems)}: refusing; nothing was written"
        )
    return (
        f"sectors: the partition table is rewritten for the target's {tsector}-byte sectors (the"
        f" source has {sector}-byte ones); every filesystem is ext with blocks of a multiple of"
        f" {tsector} bytes. Sector addresses inside boot code (GRUB's core.img) are not"
        " converted: reinstall the boot loader on the target"
    )


def _zero_tails(table: PartitionTable, moves: list[Move]) -> list[tuple[Move, Extent]]:
    """Target byte ranges of truncated partitions that the source cannot supply."""
    out = []
    for m in moves:
        present = max(0, table.disk_size - m.source.start)
        if present < m.source.size:
            out.append((m, Extent(m.target_start + present, m.target_size - present)))
    return out


def _target_table(
    table: PartitionTable, target_size: int, moves: list[Move], tsector: int, where: str
) -> PartitionTable:
    """The target's table for ``moves``; SafetyError when it cannot be written as an MBR."""
    target = _laid_out(table, target_size, moves, tsector)
    bad = limits.mbr_problems(target)
    if bad:
        raise SafetyError(
            f"the layout of {where} cannot be written as an MBR on this target: {'; '.join(bad)}."
            " Refusing; nothing was written"
        )
    return target


def _laid_out(
    table: PartitionTable, target_size: int, moves: list[Move], tsector: int
) -> PartitionTable:
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
            last = max((m.target_start + m.target_size for m in logicals), default=start)
            end = max(last, limits.round_down(last + tail if logicals else part.end, tsector))
            room = limits.target_usable_end(table.kind, target_size, tsector)
            end = max(last, min(end, room))  # a shrunk layout: the old tail may not fit
            parts.append(replace(part, start=start, size=end - start))
    last_usable = limits.target_usable_end(table.kind, target_size, tsector)
    first_usable = table.first_usable
    if table.kind == "gpt" and tsector != table.sector_size:
        first_usable = limits.round_up(
            max(table.first_usable, limits.gpt_first_usable(tsector)), tsector
        )
    return replace(
        table,
        sector_size=tsector,
        disk_size=target_size,
        partitions=tuple(parts),
        first_usable=first_usable,
        last_usable=last_usable if table.kind == "gpt" else 0,
    )


def _overlay_note(move: Move) -> str:
    """The overlay's bound, when the volume's extents are known (not for an image's)."""
    if move.volume is None or not move.volume.used:
        return ""
    bound = shrink.overlay_bound(move.volume, move.target_size)
    return f" whose overlay takes up to {human_size(bound)} of scratch space"


def _fixups(
    table: PartitionTable, target_size: int, moves: list[Move], convert: bool
) -> tuple[str, ...]:
    out = []
    for m in moves:
        if not m.editable:
            continue
        fs = m.volume.fstype if m.volume else ""
        if m.moved and fs in HIDDEN_SECTOR_FS:
            out.append(f"{m.name}: patch hidden sectors in the {fs} boot sectors")
        if m.grow_fs:
            out.append(f"{m.name}: grow {fs} to {human_size(m.target_size)}")
    shrunk = [
        f"{m.name}: shrink {m.volume.fstype if m.volume else ''} from"
        f" {human_size(m.source.size)} to {human_size(m.target_size)} in a copy-on-write view"
        f"{_overlay_note(m)} (the source is not written), then copy"
        for m in moves
        if m.shrunk
    ]
    if table.kind == "gpt" and (target_size != table.disk_size or convert):
        out.append("write the GPT backup header at the new end of the disk")
    return (*shrunk, *out)
