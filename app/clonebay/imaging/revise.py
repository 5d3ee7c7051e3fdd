"""Revising an image in place: changed byte ranges become new frames and a new index revision.

An edit (``clonebay edit``) changes a few chunks of a region; rewriting the whole image for
that would cost a full save. Instead (docs/format.md §11) the changed ranges are encoded into
frames appended to **new packs** (numbered after the last one), each changed region gets a new
index file ``REGION.rN.idx`` (revision N), and ``manifest.json`` is rewritten by atomic rename.
Until that rename the old manifest, old indexes and old packs are untouched, so a crash leaves
the image exactly as it was (plus files no manifest names, removed by the next revision). After
it, frames that no index uses any more stay in their packs as *superseded* frames: they still
tile their pack, and verify walks them by their headers.

A changed range is first widened to whole frame records (a frame is all or nothing), then cut
on the chunk grid; a piece that hashes like the old record at the same place keeps the old
frame, an all-zero piece becomes a ZERO record, anything else a new frame.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import xxhash

import clonebay
from clonebay.imaging import spec
from clonebay.imaging.codec import Buffer, codec_id, encode_chunk
from clonebay.imaging.imagedir import fsync_dir, os_call, write_new_file
from clonebay.imaging.manifest import (
    FEATURE_INDEX_REVISIONS,
    Counters,
    Manifest,
    PackEntry,
    RegionEntry,
    UnreadableRange,
    to_json,
)
from clonebay.imaging.packfiles import PackAppender
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.regionlog import MAX_RUN
from clonebay.imaging.spec import Record
from clonebay.imaging.writer import utc_now

ReadNew = Callable[[int, int], Buffer]  # (region offset, length) -> the new bytes there


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) ranges; touching ranges are joined."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def widen(ranges: list[tuple[int, int]], records: list[Record]) -> list[tuple[int, int]]:
    """Grow each range until no frame record crosses its ends (a frame is replaced whole).
    Records are sorted and do not overlap, so only the record under each end can cross it."""
    offsets = [r.offset for r in records]
    out = []
    for start, end in ranges:
        low, high = start, end
        for point in (start, end - 1):
            i = bisect.bisect_right(offsets, point) - 1
            if i >= 0 and not records[i].flags and records[i].end > point:
                low, high = min(low, records[i].offset), max(high, records[i].end)
        out.append((low, high))
    return merge_ranges(out)


def outside(rec: Record, ranges: list[tuple[int, int]], starts: list[int]) -> list[Record]:
    """The parts of ``rec`` that no range covers (a frame record is either kept or dropped);
    ``starts`` are the ranges' starts, for the binary search."""
    pieces = [(rec.offset, rec.end)]
    i = max(bisect.bisect_right(starts, rec.offset) - 1, 0)
    for start, end in ranges[i:]:
        if start >= rec.end:
            break
        if end <= rec.offset:
            continue
        if not rec.flags:
            return []
        pieces = [
            part
            for a, b in pieces
            for part in ((a, min(b, start)), (max(a, end), b))
            if part[1] > part[0]
        ]
    return [rec._replace(offset=a, length=b - a) for a, b in pieces]


@dataclasses.dataclass
class _Revised:
    entry: RegionEntry
    records: list[Record]
    new_frames: int
    new_stored: int


class ImageReviser:
    """Collect new bytes for ranges of regions, then ``commit`` them as the next revision."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._changes: dict[str, tuple[list[tuple[int, int]], ReadNew]] = {}

    def replace(self, region: str, ranges: Iterable[tuple[int, int]], read: ReadNew) -> None:
        """The bytes of ``region`` in ``ranges`` change; ``read(offset, length)`` gives them.
        Bytes outside the ranges are unchanged (``read`` may be asked for some of them too,
        when a range is widened to whole frames)."""
        self._changes[region] = (merge_ranges(ranges), read)

    def commit(self, note: str = "", warnings: Sequence[str] = ()) -> Manifest | None:
        """Write new packs and indexes, then the manifest (with ``warnings`` added to its
        own); None when nothing changed."""
        changes = {k: v for k, v in self._changes.items() if v[0]}
        if not changes and not warnings:
            return None
        with ImageReader(self.path) as reader:
            manifest = reader.manifest
            revision = manifest.revision + 1
            self._remove_leftovers(manifest)
            image_id = bytes.fromhex(manifest.image_id)
            appender = PackAppender(self.path, len(manifest.packs), manifest.pack_limit, image_id)
            try:
                revised = {
                    name: self._revise(
                        reader, name, ranges, read, appender=appender, revision=revision
                    )
                    for name, (ranges, read) in changes.items()
                }
                appender.close()
            except BaseException:
                appender.abort()
                raise
            new = self._manifest(reader, revised, appender.packs, revision, note)
            new = dataclasses.replace(new, warnings=(*new.warnings, *warnings))
        text = to_json(new)
        for sub in (spec.PACKS_DIR, spec.INDEX_DIR):
            fsync_dir(self.path / sub)
        tmp = self.path / (spec.MANIFEST_NAME + ".tmp")
        write_new_file(tmp, [text], exclusive=False)
        os_call(tmp, os.replace, tmp, self.path / spec.MANIFEST_NAME)
        fsync_dir(self.path)
        for name in revised:  # the indexes this revision replaced: no manifest names them now
            old = manifest.region(name).index_file
            with contextlib.suppress(OSError):
                (self.path / spec.INDEX_DIR / old).unlink()
        return new

    def _remove_leftovers(self, manifest: Manifest) -> None:
        """Packs and indexes an interrupted commit left behind (the manifest names none)."""
        named = {r.index_file for r in manifest.regions}
        for child in (self.path / spec.INDEX_DIR).iterdir():
            if child.name not in named and ".r" in child.name:
                os_call(child, child.unlink)
        for child in (self.path / spec.PACKS_DIR).iterdir():
            number = child.name.removesuffix(".pack")
            if spec.valid_pack_name(child.name) and int(number) >= len(manifest.packs):
                os_call(child, child.unlink)

    def _revise(
        self,
        reader: ImageReader,
        name: str,
        ranges: list[tuple[int, int]],
        read: ReadNew,
        *,
        appender: PackAppender,
        revision: int,
    ) -> _Revised:
        entry = reader.region(name)
        base = list(reader.records(name))
        if ranges[-1][1] > entry.size or ranges[0][0] < 0:
            raise ValueError(f"region {name}: changed range passes its size {entry.size}")
        ranges = widen(ranges, base)
        old_at = {(r.offset, r.length): r for r in base if not r.flags}
        starts = [start for start, _ in ranges]
        kept = [piece for rec in base for piece in outside(rec, ranges, starts)]
        chunk = reader.manifest.chunk_size
        codec = codec_id(reader.manifest.codec)
        fresh: list[Record] = []
        frames = stored = 0
        for start, end in ranges:
            pos = start
            while pos < end:
                length = min(end, (pos // chunk + 1) * chunk) - pos
                data = read(pos, length)
                if len(data) != length:
                    raise ValueError(f"region {name}: {len(data)} new bytes at {pos}, not {length}")
                enc = encode_chunk(data, codec)
                old = old_at.get((pos, length))
                if enc.is_zero:
                    fresh.append(Record(pos, length, 0, 0, 0, 0, spec.FLAG_ZERO, spec.NO_DIGEST))
                elif old is not None and old.digest == enc.digest:
                    fresh.append(old)  # unchanged: keep the frame already stored
                else:
                    pack, at = appender.append(enc.codec, length, enc.payload, enc.digest)
                    size = len(enc.payload)
                    fresh.append(Record(pos, length, pack, at, size, enc.codec, 0, enc.digest))
                    frames += 1
                    stored += spec.FRAME_HEADER.size + len(enc.payload)
                pos += length
        records = _join_zero_runs(sorted(kept + fresh))
        data = spec.pack_index_header(
            len(records), entry.size, bytes.fromhex(reader.manifest.image_id), name
        ) + b"".join(spec.pack_record(r) for r in records)
        index_file = spec.index_name(name, revision)
        write_new_file(self.path / spec.INDEX_DIR / index_file, [data])
        entry = dataclasses.replace(
            entry,
            index_file=index_file,
            index_size=len(data),
            index_xxh3=xxhash.xxh3_128_hexdigest(data),
            index_revision=revision,
        )
        return _Revised(entry, records, frames, stored)

    def _manifest(
        self,
        reader: ImageReader,
        revised: dict[str, _Revised],
        packs: list[PackEntry],
        revision: int,
        note: str,
    ) -> Manifest:
        regions: list[RegionEntry] = []
        unreadable: list[UnreadableRange] = []
        seen: set[tuple[int, int]] = set()
        totals = Counters()
        old = reader.manifest
        for before in old.regions:
            change = revised.get(before.name)
            entry = before
            if change is None:
                records = list(reader.records(before.name))
                seen.update((r.pack, r.pack_offset) for r in records if not r.flags)
                unreadable.extend(u for u in old.unreadable if u.region == before.name)
            else:
                stats = _stats(before.stats, change, change.records, seen)
                entry = dataclasses.replace(change.entry, stats=stats)
                unreadable.extend(_unreadable(before.name, change.records))
            regions.append(entry)
            totals.add(entry.stats)
        history = {
            "revision": revision,
            "created": utc_now(),
            "tool": f"clonebay {clonebay.__version__}",
            "regions": sorted(revised),
            "packs_added": len(packs),
            "note": note,
        }
        return dataclasses.replace(
            old,
            regions=tuple(regions),
            packs=old.packs + tuple(packs),
            totals=totals,
            unreadable=tuple(unreadable),
            requires=tuple(sorted({*old.requires, FEATURE_INDEX_REVISIONS})),
            revision=revision,
            revisions=(*old.revisions, history),
        )


def _stats(
    old: Counters, change: _Revised, records: list[Record], seen: set[tuple[int, int]]
) -> Counters:
    """Counters of a revised region: bytes recounted from its records, frames and stored bytes
    grown by what this revision appended (so packs still sum to totals.stored_bytes)."""
    stats = Counters(
        records=len(records),
        frames=old.frames + change.new_frames,
        stored_bytes=old.stored_bytes + change.new_stored,
    )
    for rec in records:
        if rec.flags == spec.FLAG_ZERO:
            stats.zero_bytes += rec.length
        elif rec.flags:
            stats.unreadable_bytes += rec.length
        else:
            stats.raw_bytes += rec.length
            key = (rec.pack, rec.pack_offset)
            if key in seen:
                stats.dedup_bytes += rec.length
            seen.add(key)
    return stats


def _unreadable(region: str, records: list[Record]) -> list[UnreadableRange]:
    out: list[UnreadableRange] = []
    for rec in records:
        if rec.flags != spec.FLAG_UNREADABLE:
            continue
        if out and out[-1].offset + out[-1].length == rec.offset:
            out[-1] = UnreadableRange(region, out[-1].offset, out[-1].length + rec.length)
        else:
            out.append(UnreadableRange(region, rec.offset, rec.length))
    return out


def _join_zero_runs(records: list[Record]) -> list[Record]:
    """Adjacent ZERO records joined (up to MAX_RUN), as a writer would have recorded them."""
    out: list[Record] = []
    for rec in records:
        last = out[-1] if out else None
        if (
            last is not None
            and rec.flags == last.flags == spec.FLAG_ZERO
            and last.end == rec.offset
            and last.length + rec.length <= MAX_RUN
        ):
            out[-1] = last._replace(length=last.length + rec.length)
        else:
            out.append(rec)
    return out
