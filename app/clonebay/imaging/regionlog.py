"""The bookkeeping of the region being written, shared by the directory and stream writers.

Both forms of an image describe a region by the same index records (docs/format.md §4): chunks
arrive in ascending region offset, each becomes a frame record, and zero or unreadable chunks
become runs merged up to ``MAX_RUN`` bytes. ``OpenRegion`` keeps those records, the region's
counters and the unreadable ranges, and refuses chunks out of order; the writers decide where
frames go (a pack, or the stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clonebay.imaging import spec
from clonebay.imaging.codec import EncodedChunk
from clonebay.imaging.manifest import Counters, RegionEntry, UnreadableRange

MAX_RUN = 1 << 31  # zero/unreadable records are merged into runs of at most 2 GiB


def region_entry(
    name: str,
    kind: str,
    disk_offset: int,
    size: int,
    *,
    copy: str = "raw",
    fstype: str = "",
    label: str = "",
    uuid: str = "",
    state: str = "",
    used_bytes: int | None = None,
    reason: str = "",
    notes: Sequence[str] = (),
    partition: int | None = None,
) -> RegionEntry:
    """A region's manifest entry before any data (index and stats still empty); checks names."""
    if not spec.valid_region_name(name):
        raise ValueError(f"region name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - (no dot first)")
    if kind not in spec.REGION_KINDS or copy not in spec.COPY_METHODS:
        raise ValueError(f"region {name}: kind {kind!r} / copy {copy!r} unknown")
    if disk_offset < 0 or size < 0:
        raise ValueError(f"region {name}: negative offset or size")
    if partition is not None and partition < 1:
        raise ValueError(f"region {name}: partition number {partition} (they count from 1)")
    return RegionEntry(
        name=name, kind=kind, disk_offset=disk_offset, size=size, copy=copy,
        index_file=spec.index_name(name), index_size=0, index_xxh3="", stats=Counters(),
        fstype=fstype, label=label, uuid=uuid, state=state, reason=reason, notes=tuple(notes),
        used_bytes=size if used_bytes is None else used_bytes, partition=partition,
    )  # fmt: skip


def entry_fields(entry: RegionEntry) -> dict[str, Any]:
    """``begin_region``'s arguments for ``entry``: ``writer.begin_region(**entry_fields(e))``."""
    return {
        "name": entry.name, "kind": entry.kind, "disk_offset": entry.disk_offset,
        "size": entry.size, "copy": entry.copy, "fstype": entry.fstype, "label": entry.label,
        "uuid": entry.uuid, "state": entry.state, "used_bytes": entry.used_bytes,
        "reason": entry.reason, "notes": entry.notes, "partition": entry.partition,
    }  # fmt: skip


def check_encoded(raw_len: int, chunk: EncodedChunk, chunk_size: int) -> None:
    """ValueError unless ``chunk`` (not a zero chunk) can be a frame of ``raw_len`` bytes."""
    codec, payload, digest, _ = chunk
    if raw_len > chunk_size:
        raise ValueError(f"chunk of {raw_len} bytes is larger than chunk_size")
    stored = len(payload)
    if codec not in spec.CODEC_NAMES or len(digest) != 16 or stored > raw_len:
        raise ValueError(f"bad encoded chunk: codec {codec}, {stored}/{raw_len} bytes")
    if codec == spec.CODEC_STORED and stored != raw_len:
        raise ValueError("a stored chunk's payload must be its raw bytes")


class OpenRegion:
    """The region being written: its metadata, records so far and a pending zero run."""

    def __init__(self, entry: RegionEntry) -> None:
        self.entry = entry
        self.name = entry.name
        self.size = entry.size
        self.records = bytearray()
        self.stats = Counters()
        self.unreadable: list[UnreadableRange] = []  # adjacent ranges merged
        self.next_offset = 0  # chunks must not start before this
        self.run: tuple[int, int, int] | None = None  # (flags, start, length) not yet recorded

    def take(self, offset: int, length: int) -> None:
        """Claim ``[offset, offset + length)``: ValueError when out of order, empty or outside."""
        if offset < self.next_offset or length <= 0 or offset + length > self.size:
            raise ValueError(
                f"region {self.name}: chunk [{offset}, +{length}) is out of order, empty or past"
                f" the region size {self.size} (next offset {self.next_offset})"
            )
        self.next_offset = offset + length

    def append(self, rec: spec.Record) -> None:
        self.records += spec.pack_record(rec)
        self.stats.records += 1

    def add_run(self, flags: int, offset: int, length: int) -> list[spec.Record]:
        """Take a zero/unreadable run, merged with the pending one where it continues it.

        Returns the records this completed (appended already), in order.
        """
        self.take(offset, length)
        self.count_run(flags, offset, length)
        run = self.run
        if run and run[0] == flags and run[1] + run[2] == offset and run[2] + length <= MAX_RUN:
            self.run = (flags, run[1], run[2] + length)
            return []
        done = self.flush_run()
        while length > MAX_RUN:
            done.extend(self.append_run(flags, offset, MAX_RUN))
            offset, length = offset + MAX_RUN, length - MAX_RUN
        self.run = (flags, offset, length)
        return done

    def count_run(self, flags: int, offset: int, length: int) -> None:
        if flags == spec.FLAG_ZERO:
            self.stats.zero_bytes += length
            return
        self.stats.unreadable_bytes += length
        last = self.unreadable[-1] if self.unreadable else None
        if last and last.offset + last.length == offset:
            self.unreadable[-1] = UnreadableRange(self.name, last.offset, last.length + length)
        else:
            self.unreadable.append(UnreadableRange(self.name, offset, length))

    def append_run(self, flags: int, offset: int, length: int) -> list[spec.Record]:
        rec = spec.Record(offset, length, 0, 0, 0, 0, flags, spec.NO_DIGEST)
        self.append(rec)
        return [rec]

    def flush_run(self) -> list[spec.Record]:
        """Record the pending run, if any; returns the record (in a list, empty if none)."""
        if self.run is None:
            return []
        flags, start, length = self.run
        self.run = None
        return self.append_run(flags, start, length)
