"""What a writing job tells the target path before anything is written.

Every job that writes a disk (clone, restore from a directory, restore from a stream, multicast
and TCP receive) describes its target the same way: which device or file, how many bytes it must
hold, the logical sector size its data was laid out for, and its regions: where each lands on
the target, how many bytes the job will put there (the count check compares this with what was
written and read back), and whether it is a raw area that holds a partition table (held in
memory and written last). The Plan of a disk layout comes along when the job writes a new table
(a grown restore, a clone onto another size) or patches volumes that moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clonebay.engine.layout.plan import Plan
from clonebay.model import Extent, VolumeState


@dataclass(frozen=True)
class RegionPlan:
    """One region of the job on the target."""

    name: str  # "p1", "area@0" ...: as the image or the clone names it
    target_offset: int  # where the region's byte 0 lands on the target
    size: int  # the region's extent on the target (head and tail wiped first)
    planned_bytes: int  # bytes the job will put into it (written, zeroed): the count check
    held: bool = False  # a raw area (partition tables, EBRs, boot code): held, written last
    fstype: str = ""
    state: VolumeState = VolumeState.CLEAN
    editable: bool = True  # fixups may write into it (not hibernated, encrypted, raw-unknown)


@dataclass(frozen=True)
class TargetJob:
    """Everything the target path checks and does, decided before the first write."""

    what: str  # "clone", "restore", "receive": the job's word in messages
    target: str
    needed: int  # bytes the target must hold
    regions: tuple[RegionPlan, ...]
    sector_size: int = 512  # the logical sector size the data was laid out for
    source: str | None = None  # a device or file read by the job: guarded against overlap
    allow_mounted_source: bool = False
    whole_disk: bool = True  # a disk's layout (tables wiped first) vs a single volume
    allow_table_overwrite: bool = False  # --whole-disk: a single volume over a partitioned disk
    layout: Plan | None = None  # the Plan of a layout: hidden sectors and growth follow
    new_table: bool = False  # the layout's target_table is written anew (sfdisk), last
    table_kind: str = ""  # the data's own table ("gpt", "msdos", ""): GPT backup moved if larger
    first_usable: int = 0  # GPT: bytes before the first usable LBA (scrubbed in a held head area)
    zero_tails: tuple[Extent, ...] = ()  # target byte ranges zeroed (a truncated source's tail)
    verify: bool = True
    notes: tuple[str, ...] = ()  # volumes copied raw, dirty, hibernated... (shown in results)

    @property
    def planned_bytes(self) -> int:
        return sum(r.planned_bytes for r in self.regions)


@dataclass
class TargetResult:
    """What the target path did: bytes per region planned, written and read back, and what
    followed the data (tables, fixups), with the warnings a technician must see."""

    planned: dict[str, int]
    written: dict[str, int]
    verified: dict[str, int]
    verified_chunks: int = 0
    done: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def written_bytes(self) -> int:
        return sum(self.written.values())
