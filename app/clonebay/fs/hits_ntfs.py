"""NTFS: which files, directories and system files the unreadable ranges hit.

1. Fixed places (``hits_ntfs_mft``): the boot sector and its backup, and $MFT's own clusters,
   named by the records they hold. A lost record takes its file's name, size and cluster list
   with it; the name is looked up in the parent directory's index (``hits_ntfs_names``), the
   clusters become unknown.
2. Free space: the bits of $Bitmap for the clusters left.
3. Owners: every readable in-use MFT record's runlists, base and extension records alike,
   against what is left; the walk stops as soon as nothing is. A run maps a stream's virtual
   clusters to volume clusters, so a hit becomes byte ranges of the stream: a file's data
   (``$DATA``, named streams as ``path:name``), a directory's index blocks (``$I30``), or
   metadata of a file (its attribute list, index bitmap, ...). Records 0-15 and the files in
   $Extend are system files, reported as metadata by their names.

Cost: the boot sector, a few bytes of $Bitmap, then at worst every MFT record (one sequential
read of $MFT, what ntfscluster does); with lost records, also the directory indexes until their
names are found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from clonebay.errors import FilesystemError
from clonebay.fs import extents
from clonebay.fs.hits_base import HitBook, HitKind, file_ranges
from clonebay.fs.hits_ntfs_mft import (
    FIRST_USER_RECORD,
    MFT,
    SYSTEM_FILES,
    LostRecords,
    claim_boot,
    claim_mft,
    in_use,
    load,
    stream_extents,
)
from clonebay.fs.hits_ntfs_names import FLAGS_OFFSET, Paths, name_lost
from clonebay.fs.ntfs_layout import (
    AT_ATTRIBUTE_LIST,
    AT_BITMAP,
    AT_DATA,
    AT_INDEX_ALLOCATION,
    ATTR_COMPRESSED,
    RECORD_IN_USE,
    parse_record,
)
from clonebay.fs.ntfs_mft import Mft, Stream, pick
from clonebay.fs.ntfs_state import ROOT_DIRECTORY
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

BITMAP = 6
COMPRESSION_UNIT = 16  # clusters per compression unit (the only size Windows writes)
ATTRIBUTE_NAMES = {
    AT_ATTRIBUTE_LIST: "attribute list",
    AT_BITMAP: "index bitmap",
    0x50: "security descriptor",
    0xC0: "reparse point",
    0xD0: "extended attribute information",
    0xE0: "extended attributes",
    0x100: "$EFS data (encryption keys)",
}


@dataclass
class Found:
    """What one attribute of one file lost (file bytes unclipped, and volume bytes)."""

    number: int  # the file's base record
    atype: int
    name: str  # the attribute's name ("" for the unnamed $DATA)
    at: int
    flags: int
    file: list[Extent] = field(default_factory=list)
    volume: list[Extent] = field(default_factory=list)


def find(src: ByteSource, book: HitBook) -> None:
    """Explain the unreadable bytes of the NTFS volume ``src`` in ``book``."""
    boot = claim_boot(src, book)
    mft = load(src, boot, book)
    lost = claim_mft(mft, book)
    doubtful = _claim_free(mft, book)
    found, damaged = _walk(mft, book, lost)
    paths = Paths(mft, lost.contains)
    for hit in found.values():
        _report(mft, book, paths, hit)
    skip = _skip_unreadable(mft, book)
    for number, (path, is_dir) in name_lost(mft, paths, set(in_use(mft, book, lost)), skip).items():
        note = (
            f"its MFT record ({number}) is unreadable: its size and cluster list are lost,"
            " and so is the whole " + ("directory" if is_dir else "file")
        )
        kind = HitKind.DIRECTORY if is_dir else HitKind.FILE
        book.add(kind, path, [], at=lost.offset(number), note=note)
    _report_unknown(book, lost, doubtful, damaged)


FREE_NOTE = "no file uses these clusters (a copy of the used clusters does not need them)"


def _claim_free(mft: Mft, book: HitBook) -> bool:
    """Claim what $Bitmap marks free; True when some bits could not be read."""
    boot = mft.boot
    cluster = boot.cluster_size
    try:
        bitmap = mft.data(BITMAP)
    except FilesystemError:
        return True
    doubtful = False
    for e in book.pending:
        first = e.start // cluster
        last = min(boot.clusters, -(-e.end // cluster)) - 1
        if last < first:
            continue
        lo, hi = first // 8, last // 8 + 1
        if hi > bitmap.data_size or any(
            book.unreadable(x.start, x.length) for x in stream_extents(bitmap, cluster, lo, hi - lo)
        ):
            doubtful = True
            continue
        data = bitmap.read(mft.src, cluster, lo, hi - lo)
        used = extents.from_bitmap(data, cluster, (hi - lo) * 8, lo * 8 * cluster)
        span = (Extent(first * cluster, (last + 1 - first) * cluster),)
        for free in extents.subtract(span, used):
            book.claim(HitKind.FREE, "free space", free.start, free.length, FREE_NOTE)
    return doubtful


def _walk(
    mft: Mft, book: HitBook, lost: LostRecords
) -> tuple[dict[tuple[int, int, str], Found], int]:
    """Every readable in-use record's runs against the pending bytes, until none are left."""
    cluster = mft.boot.cluster_size
    found: dict[tuple[int, int, str], Found] = {}
    damaged = 0
    for number, raw in mft.iter_records():
        if not book.pending:
            break
        if raw[:4] != b"FILE" or not raw[FLAGS_OFFSET] & RECORD_IN_USE or lost.contains(number):
            continue
        try:
            record = parse_record(raw, number, mft.where(number))
        except FilesystemError:
            damaged += 1
            continue
        owner = number if record.is_base else record.base
        for attr in record.attributes:
            for run in attr.runs:
                if run.lcn is None:
                    continue
                got = book.take(run.lcn * cluster, run.length * cluster)
                if not got:
                    continue
                key = (owner, attr.type, attr.name)
                hit = found.setdefault(key, Found(*key, got[0].start, attr.flags))
                hit.at = min(hit.at, got[0].start)
                ranges = file_ranges(got, run.lcn * cluster, run.vcn * cluster, 1 << 62)
                hit.file.extend(ranges)
                hit.volume.extend(got)
    return found, damaged


def _report(mft: Mft, book: HitBook, paths: Paths, hit: Found) -> None:
    number, atype = hit.number, hit.atype
    stream = f":{hit.name}" if hit.name and atype == AT_DATA else ""
    path = paths.path(number)
    if (number < FIRST_USER_RECORD and number != ROOT_DIRECTORY) or path.startswith("/$Extend/"):
        label, about = SYSTEM_FILES.get(number, (path.lstrip("/"), ""))
        if number == MFT and atype == AT_BITMAP:
            label, about = "$MFT bitmap", "which MFT records are in use: chkdsk rebuilds it"
        elif atype not in (AT_DATA, AT_INDEX_ALLOCATION):
            label += " " + ATTRIBUTE_NAMES.get(atype, f"attribute {atype:#x}")
        book.add(HitKind.METADATA, f"NTFS {label}{stream}", hit.volume, at=hit.at, note=about)
        return
    notes = []
    if path.startswith("/<record"):
        notes.append("its name is unknown: a record on its path is unreadable")
    if atype == AT_DATA:
        ranges = _clip(mft, hit)
        if hit.flags & ATTR_COMPRESSED:
            notes.append("compressed: whole compression units are lost")
        book.add(HitKind.FILE, path + stream, ranges, at=hit.at, note="; ".join(notes))
    elif atype == AT_INDEX_ALLOCATION:
        notes.append("index blocks: names listed there are gone (the files themselves are not)")
        ranges = _clip(mft, hit)
        book.add(HitKind.DIRECTORY, path, ranges, at=hit.at, note="; ".join(notes))
    else:
        what = ATTRIBUTE_NAMES.get(atype, f"attribute {atype:#x}")
        book.add(HitKind.METADATA, f"NTFS {what} of {path}", hit.volume, at=hit.at)


def _clip(mft: Mft, hit: Found) -> list[Extent]:
    """The hit's stream bytes cut at the stream's size (widened to whole compression units)."""
    size = 1 << 62
    try:
        attrs = pick(mft.attributes(hit.number), hit.atype, hit.name)
        first = [a for a in attrs if a.lowest_vcn == 0]
        if first and first[0].value is None:
            size = first[0].data_size
    except FilesystemError:
        pass
    ranges = hit.file
    if hit.flags & ATTR_COMPRESSED:
        unit = COMPRESSION_UNIT * mft.boot.cluster_size
        ranges = list(extents.align(extents.normalize(ranges), unit))
    return [Extent(r.start, min(r.end, size) - r.start) for r in ranges if r.start < size]


def _skip_unreadable(mft: Mft, book: HitBook) -> Callable[[Stream, int, int], bool]:
    cluster = mft.boot.cluster_size

    def skip(stream: Stream, offset: int, length: int) -> bool:
        pieces = stream_extents(stream, cluster, offset, length)
        return any(book.unreadable(x.start, x.length) for x in pieces)

    return skip


def _report_unknown(book: HitBook, lost: LostRecords, doubtful: bool, damaged: int) -> None:
    reasons = []
    if lost.runs:
        reasons.append(
            f"they may belong to a file whose MFT record is unreadable (records {lost.spans()})"
        )
    if doubtful:
        reasons.append("$Bitmap is unreadable there: they may be free")
    if damaged:
        reasons.append(f"{damaged} MFT records could not be parsed and were skipped")
    if not reasons:
        reasons.append("marked in use in $Bitmap, but no MFT record claims them")
    for e in book.pending:
        book.claim(
            HitKind.UNKNOWN, "clusters of unknown owner", e.start, e.length, "; ".join(reasons)
        )
