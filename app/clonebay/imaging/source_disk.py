"""What a manifest records about the source disk: the device (``source``) and its partition table
(``table``), as declared, checked dataclasses (docs/format.md §5).

These sections are the format's own declaration, not a dump of the engine's model objects: a
field added to ``model.PartitionTable`` does not change the format, and a manifest written by a
later clonebay with more keys still loads (unknown keys are ignored, §9). ``from_json`` checks
every value a restore relies on (types, non-negative offsets, sector sizes, partitions that start
inside the disk and do not overlap) and raises ``ImageError`` (exit 5) naming the key path;
``to_json`` writes the keys clonebay has always written, so older readers read new images. A
section read from a manifest remembers which of its keys were there (``present``), so that a
conversion or an edit rewrites an older manifest's sections byte for byte (docs/format.md §10).

A partition may run past the end of the disk: that is how a truncated source (a disk image file
cut short) was saved, and the restore plan fills or refuses the missing tail
(engine/layout/plan.py). A table of kind ``""`` means none was recorded (an image of one
partition writes ``"table": {}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from clonebay.imaging.jsonfields import JsonObject
from clonebay.imaging.spec import MANIFEST_NAME
from clonebay.model import Partition, PartitionTable

TABLE_KINDS = ("gpt", "msdos", "none")  # "" when the image records no table
PARTITION_KINDS = {"gpt": ("primary",), "msdos": ("primary", "extended", "logical")}
DEFAULT_SECTOR_SIZE = 512  # what an image that does not record its sector size was made with
MAX_PHYSICAL_SECTOR = 1 << 24  # physical sizes are hints (RAID, dm report large ones)
MAX_PARTITION_NUMBER = (1 << 32) - 1


def _present(f: JsonObject, section: type) -> frozenset[str]:
    """The keys of ``section`` (its field names) that the JSON object has."""
    return frozenset(k.name for k in fields(section) if k.name in f.obj)


def _emit(full: dict[str, Any], present: frozenset[str] | None) -> dict[str, Any]:
    """Every key for a section built by clonebay; the keys it had for one read from an image."""
    return full if present is None else {k: v for k, v in full.items() if k in present}


@dataclass(frozen=True)
class SourceInfo:
    """The device an image was saved from; ``partition``: the one partition saved, if any."""

    path: str = ""
    size: int = 0
    logical_sector_size: int = DEFAULT_SECTOR_SIZE
    physical_sector_size: int = DEFAULT_SECTOR_SIZE
    model: str = ""
    serial: str = ""
    wwn: str = ""
    transport: str = ""
    partition: int | None = None
    present: frozenset[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: object, file: str = MANIFEST_NAME, path: str = "source") -> SourceInfo:
        f = JsonObject({} if data is None else data, path, file)
        partition = f.optional_integer("partition", 0, MAX_PARTITION_NUMBER)
        info = cls(
            path=f.text("path"),
            size=f.integer("size", default=0),
            logical_sector_size=f.sector_size("logical_sector_size", DEFAULT_SECTOR_SIZE),
            physical_sector_size=f.sector_size(
                "physical_sector_size", DEFAULT_SECTOR_SIZE, MAX_PHYSICAL_SECTOR
            ),
            model=f.text("model"),
            serial=f.text("serial"),
            wwn=f.text("wwn"),
            transport=f.text("transport"),
            partition=partition or None,  # 0 never named a partition
        )
        return replace(info, present=_present(f, cls))

    def to_json(self) -> dict[str, Any]:
        return _emit({
            "path": self.path, "size": self.size,
            "logical_sector_size": self.logical_sector_size,
            "physical_sector_size": self.physical_sector_size,
            "model": self.model, "serial": self.serial, "wwn": self.wwn,
            "transport": self.transport, "partition": self.partition,
        }, self.present)  # fmt: skip


@dataclass(frozen=True)
class PartitionInfo:
    """One entry of the recorded table; offsets in bytes, ``number`` as the kernel counts."""

    number: int
    start: int
    size: int
    kind: str = "primary"  # "primary", "extended", "logical" (MBR); "primary" for GPT
    type_id: str = ""  # MBR "0x83"; GPT type GUID
    name: str = ""  # GPT name
    guid: str = ""  # GPT unique partition GUID
    flags: tuple[str, ...] = ()
    attributes: int = 0  # GPT attribute bits
    present: frozenset[str] | None = field(default=None, compare=False, repr=False)

    @property
    def end(self) -> int:
        return self.start + self.size

    @classmethod
    def from_json(cls, f: JsonObject, table_kind: str, sector: int) -> PartitionInfo:
        start, size = f.integer("start"), f.integer("size", low=1)
        for key, value in (("start", start), ("size", size)):
            if value % sector:
                raise f.fail(key, f"must be a multiple of the sector size {sector}, got {value}")
        part = cls(
            number=f.integer("number", 1, MAX_PARTITION_NUMBER),
            start=start,
            size=size,
            kind=f.text("kind", PARTITION_KINDS[table_kind]) if "kind" in f.obj else "primary",
            type_id=f.text("type_id"),
            name=f.text("name"),
            guid=f.text("guid"),
            flags=f.texts("flags"),
            attributes=f.integer("attributes", default=0),
        )
        return replace(part, present=_present(f, cls))

    def to_json(self) -> dict[str, Any]:
        return _emit({
            "number": self.number, "start": self.start, "size": self.size, "kind": self.kind,
            "type_id": self.type_id, "name": self.name, "guid": self.guid,
            "flags": list(self.flags), "attributes": self.attributes,
        }, self.present)  # fmt: skip


@dataclass(frozen=True)
class TableInfo:
    """The source disk's partition table; ``kind`` "" when the image records none."""

    kind: str = ""
    sector_size: int = DEFAULT_SECTOR_SIZE  # logical sector size the table's LBAs count in
    disk_size: int = 0
    partitions: tuple[PartitionInfo, ...] = field(default=())
    disk_id: str = ""  # GPT disk GUID, or the MBR signature as 0x%08x
    first_usable: int = 0  # GPT: first byte a partition may use
    last_usable: int = 0  # GPT: last usable byte + 1
    present: frozenset[str] | None = field(default=None, compare=False, repr=False)

    @property
    def recorded(self) -> bool:
        return self.kind != ""

    @classmethod
    def from_json(cls, data: object, file: str = MANIFEST_NAME, path: str = "table") -> TableInfo:
        f = JsonObject({} if data is None else data, path, file)
        kind = f.text("kind", ("", *TABLE_KINDS))
        sector = f.sector_size("sector_size", DEFAULT_SECTOR_SIZE)
        disk_size = f.integer("disk_size", default=0)
        first, last = f.integer("first_usable", default=0), f.integer("last_usable", default=0)
        if last and first > last:
            raise f.fail("first_usable", f"{first} lies after last_usable {last}")
        entries = f.objects("partitions")
        if entries and kind not in PARTITION_KINDS:
            raise f.fail("partitions", f"a table of kind {kind!r} has no partitions")
        parts = tuple(PartitionInfo.from_json(e, kind, sector) for e in entries)
        _check_layout(parts, entries, disk_size)
        table = cls(kind, sector, disk_size, parts, f.text("disk_id"), first, last)
        return replace(table, present=_present(f, cls))

    def to_json(self) -> dict[str, Any]:
        """``{}`` for a table that was not recorded; the keys of ``asdict(PartitionTable)``."""
        if self == TableInfo() and not self.present:
            return {}
        return _emit({
            "kind": self.kind, "sector_size": self.sector_size, "disk_size": self.disk_size,
            "partitions": [p.to_json() for p in self.partitions], "disk_id": self.disk_id,
            "first_usable": self.first_usable, "last_usable": self.last_usable,
        }, self.present)  # fmt: skip

    def partition(self, number: int) -> PartitionInfo | None:
        return next((p for p in self.partitions if p.number == number), None)

    @classmethod
    def from_model(cls, table: PartitionTable) -> TableInfo:
        parts = tuple(
            PartitionInfo(
                p.number, p.start, p.size, p.kind, p.type_id, p.name, p.guid, p.flags, p.attributes
            )
            for p in table.partitions
        )
        return cls(
            table.kind, table.sector_size, table.disk_size, parts, table.disk_id,
            table.first_usable, table.last_usable,
        )  # fmt: skip

    def to_model(self) -> PartitionTable:
        parts = tuple(
            Partition(
                p.number, p.start, p.size, p.kind, p.type_id, p.name, p.guid, p.flags, p.attributes
            )
            for p in self.partitions
        )
        return PartitionTable(
            self.kind or "none", self.sector_size, self.disk_size, parts, self.disk_id,
            self.first_usable, self.last_usable,
        )  # fmt: skip


def _check_layout(
    parts: tuple[PartitionInfo, ...], entries: list[JsonObject], disk_size: int
) -> None:
    """Numbers unique; every partition starts inside the disk; no two overlap, except logical
    partitions inside their extended container, which they must not leave."""
    extended = [p for p in parts if p.kind == "extended"]
    for i, (p, f) in enumerate(zip(parts, entries, strict=True)):
        if p.start >= disk_size:
            raise f.fail("start", f"{p.start} lies outside the disk (disk_size {disk_size})")
        if p.kind == "logical" and not any(e.start < p.start and p.end <= e.end for e in extended):
            raise f.fail("start", "a logical partition must lie inside the extended partition")
        for j, q in enumerate(parts[:i]):
            if q.number == p.number:
                raise f.fail("number", f"{p.number} is also the number of partitions[{j}]")
            nested = {p.kind, q.kind} == {"extended", "logical"}
            if p.start < q.end and q.start < p.end and not nested:
                raise f.fail(
                    "start",
                    f"partition {p.number} [{p.start}, {p.end}) overlaps partition {q.number}"
                    f" [{q.start}, {q.end}) (partitions[{j}])",
                )
