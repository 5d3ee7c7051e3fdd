"""Reading NTFS files through the Master File Table: records, attribute lists, data streams.

$MFT is itself a file (record 0) whose $DATA may be fragmented. Its first runlist segment lives in
record 0 and maps at least the start of the table; a heavily fragmented $MFT also has an
$ATTRIBUTE_LIST whose further $DATA segments sit in extension records. Those records are found
through the part of the table mapped so far, so ``load_mft`` grows the runlist segment by segment
in VCN order. Once loaded, ``Mft.record(n)`` reads any record through the runlist, and
``Mft.attributes(n)`` returns a file's attributes with its attribute list resolved.

Spec: Linux-NTFS "NTFS Documentation", "$MFT", "$ATTRIBUTE_LIST" and "Data runs".
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from clonebay.errors import FilesystemError
from clonebay.fs.ntfs_layout import (
    AT_ATTRIBUTE_LIST,
    AT_DATA,
    ATTR_COMPRESSED,
    ATTR_ENCRYPTED,
    ATTR_SPARSE,
    Attribute,
    BootSector,
    Record,
    Run,
    parse_record,
    ref_number,
)
from clonebay.system.blockdev import ByteSource

MAX_ATTRIBUTE_LIST = 256 << 10  # Windows and ntfs-3g cap an attribute list at 256 KiB
MIN_MFT_RECORDS = 16  # records 0..15 are reserved for the system files
READ_PIECE = 8 << 20  # large preads keep multi-GiB volumes fast


# $ATTRIBUTE_LIST entry: type, length, name_length, name_offset, lowest_vcn, mft_reference,
# instance; the name follows.
ATTR_LIST_ENTRY = struct.Struct("<IHBBqQH")


class AttrListEntry(NamedTuple):
    type: int
    name: str
    lowest_vcn: int
    record: int
    sequence: int
    instance: int


def parse_attribute_list(value: bytes, where: str) -> list[AttrListEntry]:
    """Decode every entry of an $ATTRIBUTE_LIST value."""
    entries: list[AttrListEntry] = []
    pos = 0
    while pos < len(value):  # ``pos`` grows by >= 26 bytes a pass
        if pos + ATTR_LIST_ENTRY.size > len(value):
            raise FilesystemError(f"{where}: attribute list entry at {pos} is truncated")
        atype, length, name_len, name_ofs, low, ref, instance = ATTR_LIST_ENTRY.unpack_from(
            value, pos
        )
        if length < ATTR_LIST_ENTRY.size or pos + length > len(value) or low < 0:
            raise FilesystemError(f"{where}: attribute list entry at {pos} is invalid")
        if name_len and (name_ofs < ATTR_LIST_ENTRY.size or name_ofs + 2 * name_len > length):
            raise FilesystemError(f"{where}: attribute list entry at {pos} has a bad name")
        raw_name = value[pos + name_ofs : pos + name_ofs + 2 * name_len]
        name = raw_name.decode("utf-16-le", "replace")
        entries.append(AttrListEntry(atype, name, low, ref_number(ref), ref >> 48, instance))
        pos += length
    return entries


def pread(src: ByteSource, length: int, offset: int, what: str) -> bytes:
    """Read from ``src`` after checking the range, so that garbage gives a FilesystemError."""
    if offset < 0 or length < 0 or offset + length > src.size:
        raise FilesystemError(
            f"{src.name}: {what}: {length} bytes at {offset} lie past the end of the partition"
            f" ({src.size} bytes)"
        )
    return src.pread(length, offset)


@dataclass(frozen=True)
class Stream:
    """An attribute's content: its resident value, or its merged runs and sizes."""

    where: str
    flags: int
    data_size: int
    initialized_size: int = 0
    allocated_size: int = 0
    runs: tuple[Run, ...] = ()
    value: bytes | None = None

    @property
    def special(self) -> bool:
        """Compressed, encrypted or sparse: its clusters are not a plain copy of its bytes."""
        sparse_run = any(r.lcn is None for r in self.runs)
        return bool(self.flags & (ATTR_COMPRESSED | ATTR_ENCRYPTED | ATTR_SPARSE)) or sparse_run

    def read(self, src: ByteSource, cluster: int, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the stream (zeros past the initialized size)."""
        if offset < 0 or length < 0 or offset + length > self.data_size:
            raise FilesystemError(
                f"{self.where}: read of {length} bytes at {offset} past its size {self.data_size}"
            )
        if self.value is not None:
            return self.value[offset : offset + length]
        if self.flags & (ATTR_COMPRESSED | ATTR_ENCRYPTED):
            raise FilesystemError(f"{self.where}: compressed or encrypted data is not parsed")
        readable = max(0, min(offset + length, self.initialized_size) - offset)
        data = read_runs(src, self.runs, cluster, offset, readable, where=self.where)
        return data + bytes(length - readable)


def read_runs(
    src: ByteSource, runs: Sequence[Run], cluster: int, offset: int, length: int, *, where: str
) -> bytes:
    """Bytes ``[offset, offset + length)`` of a stream laid out by contiguous ``runs``."""
    out = bytearray()
    starts = [r.vcn for r in runs]
    i = bisect.bisect_right(starts, offset // cluster) - 1
    pos, end = offset, offset + length
    while pos < end:  # each pass moves to the next run, so at most len(runs) passes
        if i < 0 or i >= len(runs):
            raise FilesystemError(f"{where}: byte {pos} is not mapped by the runlist")
        run = runs[i]
        run_start, run_end = run.vcn * cluster, (run.vcn + run.length) * cluster
        if not run_start <= pos < run_end:
            raise FilesystemError(f"{where}: runlist has a gap at byte {pos}")
        n = min(end, run_end) - pos
        if run.lcn is None:
            out += bytes(n)
        else:
            out += pread(src, n, run.lcn * cluster + pos - run_start, where)
        pos += n
        i += 1
    return bytes(out)


def merge_segments(
    segments: Sequence[Attribute],
    clusters: int,
    cluster: int,
    where: str,
    *,
    partial: bool = False,
) -> Stream:
    """One stream from an attribute's segments: contiguous VCNs from 0, runs inside the volume.

    ``partial`` accepts a runlist that maps only the start of the attribute (while $MFT's own
    segments are being gathered); the sizes are then cut to what is mapped.
    """
    if not segments:
        raise FilesystemError(f"{where}: attribute not found")
    first = segments[0]
    if first.value is not None:
        if len(segments) > 1:
            raise FilesystemError(f"{where}: resident attribute has several segments")
        return Stream(where, first.flags, len(first.value), value=first.value)
    ordered = sorted(segments, key=lambda a: a.lowest_vcn)
    head = ordered[0]
    runs: list[Run] = []
    next_vcn = 0
    for seg in ordered:
        if seg.value is not None or seg.lowest_vcn != next_vcn:
            raise FilesystemError(
                f"{where}: segment in record {seg.record} starts at VCN {seg.lowest_vcn},"
                f" expected {next_vcn}"
            )
        runs.extend(seg.runs)
        next_vcn = seg.highest_vcn + 1
    mapped = next_vcn * cluster
    if mapped > head.allocated_size or (mapped < head.allocated_size and not partial):
        raise FilesystemError(
            f"{where}: runlist maps {next_vcn} clusters, allocated size is {head.allocated_size}"
        )
    for run in runs:
        if run.lcn is not None and run.lcn + run.length > clusters:
            raise FilesystemError(
                f"{where}: run of {run.length} clusters at LCN {run.lcn} lies past the end of"
                f" the volume ({clusters} clusters)"
            )
    return Stream(
        where,
        head.flags,
        min(mapped, head.data_size),
        min(mapped, head.initialized_size),
        head.allocated_size,
        tuple(runs),
    )


def pick(attrs: Sequence[Attribute], atype: int, name: str = "") -> list[Attribute]:
    return [a for a in attrs if a.type == atype and a.name == name]


class Mft:
    """The volume's MFT: read records by number and resolve files' attributes."""

    def __init__(self, src: ByteSource, boot: BootSector, stream: Stream) -> None:
        self.src = src
        self.boot = boot
        self.stream = stream
        self.record_count = stream.initialized_size // boot.record_size

    def raw_record(self, number: int) -> bytes:
        if not 0 <= number < self.record_count:
            raise FilesystemError(
                f"{self.src.name}: MFT record {number} is outside $MFT ({self.record_count}"
                " initialized records)"
            )
        size = self.boot.record_size
        return self.stream.read(self.src, self.boot.cluster_size, number * size, size)

    def record(self, number: int) -> Record:
        return parse_record(self.raw_record(number), number, self.where(number))

    def where(self, number: int) -> str:
        return f"{self.src.name}: MFT record {number}"

    def attributes(self, number: int) -> list[Attribute]:
        """A base record's attributes, plus those its attribute list puts in extension records."""
        rec = self.record(number)
        if not rec.in_use or not rec.is_base:
            raise FilesystemError(f"{self.where(number)} is not an in-use base record")
        attrs = [a for a in rec.attributes if a.type != AT_ATTRIBUTE_LIST]
        lists = [a for a in rec.attributes if a.type == AT_ATTRIBUTE_LIST]
        if not lists:
            return attrs
        if len(lists) > 1:
            raise FilesystemError(f"{self.where(number)} has {len(lists)} attribute lists")
        value = self.attribute_list_value(lists[0], number)
        entries = parse_attribute_list(value, f"{self.where(number)} attribute list")
        loaded = {number: rec}
        for entry in entries:  # bounded by the list's size (<= 256 KiB)
            if entry.record not in loaded:
                ext = self.record(entry.record)
                if not ext.in_use or ext.is_base or ext.base != number:
                    raise FilesystemError(
                        f"{self.where(entry.record)} is listed as an extension of record"
                        f" {number} but is not one"
                    )
                loaded[entry.record] = ext
                attrs.extend(a for a in ext.attributes if a.type != AT_ATTRIBUTE_LIST)
            holder = loaded[entry.record]
            if not any(
                a.type == entry.type and a.instance == entry.instance for a in holder.attributes
            ):
                raise FilesystemError(
                    f"{self.where(number)}: attribute list names attribute {entry.type:#x}"
                    f" #{entry.instance} in record {entry.record}, which lacks it"
                )
        return attrs

    def attribute_list_value(self, attr: Attribute, number: int) -> bytes:
        where = f"{self.where(number)} attribute list"
        stream = merge_segments([attr], self.boot.clusters, self.boot.cluster_size, where)
        return read_attribute_list(self.src, self.boot, stream)

    def data(self, number: int, atype: int = AT_DATA, name: str = "") -> Stream:
        """A file's attribute ``atype``/``name`` as one stream."""
        attrs = self.attributes(number)
        what = f"{self.where(number)} attribute {atype:#x} {name!r}"
        return merge_segments(
            pick(attrs, atype, name), self.boot.clusters, self.boot.cluster_size, what
        )

    def iter_records(self, first: int = 0) -> Iterator[tuple[int, bytes]]:
        """Every initialized record's raw bytes, read in large pieces (for whole-table walks)."""
        size = self.boot.record_size
        per_piece = max(1, READ_PIECE // size)
        for start in range(first, self.record_count, per_piece):
            count = min(per_piece, self.record_count - start)
            chunk = self.stream.read(self.src, self.boot.cluster_size, start * size, count * size)
            for i in range(count):
                yield start + i, chunk[i * size : (i + 1) * size]


def read_attribute_list(src: ByteSource, boot: BootSector, stream: Stream) -> bytes:
    if stream.data_size > MAX_ATTRIBUTE_LIST or stream.special:
        raise FilesystemError(
            f"{stream.where}: {stream.data_size} bytes (or sparse/compressed) is not supported"
        )
    return stream.read(src, boot.cluster_size, 0, stream.data_size)


def load_mft(src: ByteSource, boot: BootSector) -> Mft:
    """Read record 0 at the boot sector's $MFT cluster and assemble $MFT's full runlist."""
    offset = boot.mft_lcn * boot.cluster_size
    where = f"{src.name}: MFT record 0 at byte {offset}"
    rec0 = parse_record(pread(src, boot.record_size, offset, "$MFT record 0"), 0, where)
    if not rec0.in_use or not rec0.is_base:
        raise FilesystemError(f"{where} is not an in-use base record")
    what = f"{src.name}: $MFT $DATA"
    segments = [a for a in pick(rec0.attributes, AT_DATA) if a.value is None]
    first = [a for a in segments if a.lowest_vcn == 0]
    if len(first) != 1 or not first[0].runs or first[0].runs[0].lcn != boot.mft_lcn:
        raise FilesystemError(f"{what}: record 0 does not map VCN 0 at the boot sector's LCN")
    lists = [a for a in rec0.attributes if a.type == AT_ATTRIBUTE_LIST]
    if len(lists) > 1:
        raise FilesystemError(f"{where} has {len(lists)} attribute lists")
    if lists:
        al_stream = merge_segments(
            lists, boot.clusters, boot.cluster_size, f"{where} attribute list"
        )
        value = read_attribute_list(src, boot, al_stream)
        entries = parse_attribute_list(value, f"{where} attribute list")
        wanted = sorted(
            (e for e in entries if e.type == AT_DATA and e.name == "" and e.record != 0),
            key=lambda e: e.lowest_vcn,
        )
        for entry in wanted:  # bounded by the list's size
            partial = _mft_from(src, boot, segments, what)
            ext = partial.record(entry.record)
            if not ext.in_use or ext.is_base or ext.base != 0:
                raise FilesystemError(f"{partial.where(entry.record)} is not a $MFT extension")
            found = [a for a in pick(ext.attributes, AT_DATA) if a.lowest_vcn == entry.lowest_vcn]
            if len(found) != 1 or found[0].value is not None:
                raise FilesystemError(
                    f"{partial.where(entry.record)} lacks $MFT's $DATA from VCN {entry.lowest_vcn}"
                )
            segments.append(found[0])
    mft = Mft(src, boot, merge_segments(segments, boot.clusters, boot.cluster_size, what))
    if mft.stream.special:
        raise FilesystemError(f"{what}: compressed, encrypted or sparse $MFT is not supported")
    if mft.stream.data_size % boot.record_size or mft.record_count < MIN_MFT_RECORDS:
        raise FilesystemError(
            f"{what}: {mft.stream.data_size} bytes is not a whole number of >= {MIN_MFT_RECORDS}"
            f" records of {boot.record_size} bytes"
        )
    return mft


def _mft_from(src: ByteSource, boot: BootSector, segments: list[Attribute], what: str) -> Mft:
    """An Mft over the $DATA segments known so far (VCN-contiguous from 0, maybe incomplete)."""
    stream = merge_segments(segments, boot.clusters, boot.cluster_size, what, partial=True)
    return Mft(src, boot, stream)
