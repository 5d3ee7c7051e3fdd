"""StreamReader: read an image stream front to back, checking everything, as it arrives.

Opening reads the stream header and the MANIFEST record (``reader.manifest``: the regions, the
source and the partition table, before any data), so a restore can plan and refuse a target
that is too small before it writes anything. ``events()`` then yields one ``StreamChunk`` per
FRAME, ZERO, UNREADABLE or REF record, in stream order, and finally a ``StreamEnd``. Nothing
is yielded before it is checked: every record header's CRC-32, the order (regions in manifest
order, ascending non-overlapping offsets inside each region), every frame's header against its
record and its decoded bytes against their xxh3-128, and every REF against the FRAME it names.
At the end, each INDEX record must list exactly the records that arrived, the END manifest must
agree with the MANIFEST record and with the counts, and nothing may follow END.

A stream that stops early gives an ImageError naming the byte where it stopped and the last
region and offset that arrived; a damaged record gives one naming its type, stream byte,
region and offset. Memory is bounded by the index (48 bytes per record) and one frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import IO, NamedTuple

import xxhash

from clonebay.imaging import spec, stream
from clonebay.imaging.codec import Buffer, DecodeError, decode_payload
from clonebay.imaging.manifest import Counters, Manifest, RegionEntry, parse
from clonebay.imaging.spec import ImageError, Record

READ_PIECE = 1 << 20  # bytes asked of the file object at a time (a pipe returns less)


class StreamChunk(NamedTuple):
    """One data record, checked. ``record`` is its index record (``pack`` STREAM_PACK, ``pack
    offset`` the stream offset of its frame header, or of the FRAME a REF repeats)."""

    kind: int  # stream.REC_FRAME, REC_ZERO, REC_UNREADABLE or REC_REF
    region: int  # position in the manifest's regions
    name: str  # the region's name
    record: Record
    data: Buffer | None  # FRAME: the decoded bytes (their xxh3-128 checked)
    frame: Buffer | None  # FRAME: frame header and payload as received (as in a pack)
    source: tuple[int, int] | None  # REF: (region, offset) of the FRAME with the same bytes
    position: int  # stream offset of the record header

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def length(self) -> int:
        return self.record.length


class StreamEnd(NamedTuple):
    """The checked trailer: the final manifest and every region's index records."""

    manifest: Manifest
    records: dict[str, list[Record]]
    size: int  # bytes in the stream


class _Frame(NamedTuple):
    raw_length: int
    digest: bytes
    codec: int
    stored: int
    stream_offset: int


class StreamReader:
    """Read one stream from ``source`` (any binary file object: stdin, a pipe, a file)."""

    def __init__(self, source: IO[bytes], name: str = "stream") -> None:
        self.source = source
        self.name = name
        self.position = 0  # bytes consumed
        self._last = "none"
        self.image_id = stream.parse_stream_header(
            self._read(stream.STREAM_HEADER.size, "the stream header"), name
        ).image_id
        at = self._where(stream.STREAM_HEADER.size)
        head = self._header("the MANIFEST record")
        if head.kind != stream.REC_MANIFEST or head[1:4] != (0, 0, 0):
            raise ImageError(f"{at}: the first record is {head.name}, expected a MANIFEST")
        self.manifest = self._manifest(head, "MANIFEST")
        self._check_head_manifest(at)
        self.regions: tuple[RegionEntry, ...] = self.manifest.regions
        self._records = [bytearray() for _ in self.regions]
        self._stats = [Counters() for _ in self.regions]
        self._frames: dict[tuple[int, int], _Frame] = {}
        self._region = 0
        self._next_offset = 0
        self._started = False

    # -- the data records ------------------------------------------------------------------

    def events(self) -> Iterator[StreamChunk | StreamEnd]:
        """Every data record in order, then the END; may be iterated once."""
        if self._started:
            raise ValueError("a stream can be read once")
        self._started = True
        while True:
            position = self.position
            head = self._header("a record header")
            if head.kind not in stream.DATA_RECORDS:
                yield self._trailer(head, position)
                return
            yield self._data(head, position)

    def _data(self, head: stream.RecordHeader, position: int) -> StreamChunk:
        at = f"{self._where(position)}: {head.name} record"
        if not self._region <= head.region < len(self.regions):
            raise ImageError(
                f"{at} names region {head.region}; expected {self._region} or a later one of"
                f" the manifest's {len(self.regions)} (records out of order)"
            )
        if head.region != self._region:
            self._region, self._next_offset = head.region, 0
        entry = self.regions[head.region]
        at += f" (region {entry.name}, offset {head.offset})"
        limit = self.manifest.chunk_size if head.kind in (stream.REC_FRAME, stream.REC_REF) else 0
        if (
            head.offset < self._next_offset
            or not 0 < head.length <= (limit or spec.MAX_RECORD_LENGTH)
            or head.offset + head.length > entry.size
        ):
            raise ImageError(
                f"{at}: length {head.length} is out of order (next offset {self._next_offset}),"
                f" empty, too long, or passes the region size {entry.size}"
            )
        self._next_offset = head.offset + head.length
        stats = self._stats[head.region]
        stats.records += 1
        source: tuple[int, int] | None = None
        data = frame = None
        if head.kind == stream.REC_FRAME:
            rec, frame, data = self._frame(head, position, at)
            stats.frames += 1
            stats.stored_bytes += len(frame)
        elif head.kind == stream.REC_REF:
            rec, source = self._ref(head, at)
            stats.dedup_bytes += head.length
        else:
            if head.body_length:
                raise ImageError(f"{at}: has a body of {head.body_length} bytes (expected none)")
            flags = spec.FLAG_ZERO if head.kind == stream.REC_ZERO else spec.FLAG_UNREADABLE
            rec = Record(head.offset, head.length, 0, 0, 0, 0, flags, spec.NO_DIGEST)
        if rec.flags == spec.FLAG_ZERO:
            stats.zero_bytes += rec.length
        elif rec.flags == spec.FLAG_UNREADABLE:
            stats.unreadable_bytes += rec.length
        else:
            stats.raw_bytes += rec.length
        self._records[head.region] += spec.pack_record(rec)
        self._last = f"region {entry.name} offset {rec.offset} to {rec.end}"
        return StreamChunk(head.kind, head.region, entry.name, rec, data, frame, source, position)

    def _frame(
        self, head: stream.RecordHeader, position: int, at: str
    ) -> tuple[Record, bytes, Buffer]:
        most = spec.FRAME_HEADER.size + head.length
        if not spec.FRAME_HEADER.size <= head.body_length <= most:
            raise ImageError(f"{at}: body of {head.body_length} bytes (a frame needs 32 to {most})")
        body = self._read(head.body_length, f"the FRAME record at byte {position}")
        fh = spec.parse_frame_header(body, at)
        stored = head.body_length - spec.FRAME_HEADER.size
        if (fh.raw_length, fh.stored_length) != (head.length, stored):
            raise ImageError(
                f"{at}: frame header says {fh.raw_length} raw / {fh.stored_length} stored bytes,"
                f" the record {head.length} / {stored}"
            )
        if fh.codec not in spec.CODEC_NAMES:
            raise ImageError(f"{at}: codec id {fh.codec} unknown (made by a newer clonebay?)")
        payload = memoryview(body)[spec.FRAME_HEADER.size :]
        try:
            data = decode_payload(fh.codec, payload, fh.raw_length, fh.digest)
        except DecodeError as exc:
            raise ImageError(f"{at}: {exc}") from None
        frame_at = position + stream.RECORD_HEADER.size
        self._frames[(head.region, head.offset)] = _Frame(
            head.length, fh.digest, fh.codec, stored, frame_at
        )
        rec = Record(head.offset, head.length, stream.STREAM_PACK, frame_at, stored, 0, 0, b"")
        return rec._replace(codec=fh.codec, digest=fh.digest), body, data

    def _ref(self, head: stream.RecordHeader, at: str) -> tuple[Record, tuple[int, int]]:
        if head.body_length != stream.REF_BODY.size:
            raise ImageError(f"{at}: REF body of {head.body_length} bytes (expected 26)")
        ref = stream.parse_ref_body(self._read(head.body_length, f"the REF body at {at}"), at)
        first = self._frames.get((ref.region, ref.offset))
        if first is None or (first.raw_length, first.digest) != (head.length, ref.digest):
            raise ImageError(
                f"{at}: repeats region {ref.region} offset {ref.offset}, but no earlier FRAME"
                f" there has {head.length} bytes with xxh3-128 {ref.digest.hex()}"
            )
        pack, pack_offset = stream.STREAM_PACK, first.stream_offset
        rec = Record(head.offset, head.length, pack, pack_offset, 0, 0, 0, first.digest)
        return rec._replace(stored_length=first.stored, codec=first.codec), (ref.region, ref.offset)

    # -- the trailer -----------------------------------------------------------------------

    def _trailer(self, head: stream.RecordHeader, position: int) -> StreamEnd:
        indexes: dict[str, list[Record]] = {}
        sizes: list[tuple[int, str]] = []
        for number, entry in enumerate(self.regions):
            at = f"{self._where(position)}: {head.name} record"
            if head.kind != stream.REC_INDEX or head[1:4] != (number, 0, 0):
                raise ImageError(
                    f"{at} where the INDEX of region {number} ({entry.name}) belongs"
                    " (records out of order)"
                )
            body = self._index(head, entry, number, f"{at} (region {entry.name})")
            indexes[entry.name] = _records(body[spec.INDEX_HEADER.size :])
            sizes.append((len(body), xxhash.xxh3_128_hexdigest(body)))
            position = self.position
            head = self._header("a record header")
        at = f"{self._where(position)}: {head.name} record"
        if head.kind != stream.REC_END or head[1:4] != (0, 0, 0):
            raise ImageError(f"{at} where the END record belongs (records out of order)")
        final = self._manifest(head, "END")
        self._check_final(final, sizes, at)
        if self.source.read(1):
            raise ImageError(f"{self._where(self.position)}: data after the END record")
        return StreamEnd(final, indexes, self.position)

    def _index(self, head: stream.RecordHeader, entry: RegionEntry, number: int, at: str) -> bytes:
        expected = self._records[number]
        size = spec.INDEX_HEADER.size + len(expected) + stream.BODY_HASH
        if head.body_length != size:
            raise ImageError(
                f"{at}: body of {head.body_length} bytes; {len(expected) // spec.RECORD.size}"
                f" records arrived, so it must be {size}"
            )
        body = stream.unseal(self._read(size, f"the INDEX record of region {entry.name}"), at)
        ih = spec.parse_index_header(body, at)
        found = (ih.records, ih.region_size, ih.image_id, ih.region)
        want = (len(expected) // spec.RECORD.size, entry.size, self.image_id, entry.name)
        if found != want:
            raise ImageError(
                f"{at}: index header (records, size, image id, region) is {found}, expected {want}"
            )
        listed = body[spec.INDEX_HEADER.size :]
        if listed != expected:
            pairs = zip(_records(listed), _records(expected), strict=True)
            differ = next(((a, b) for a, b in pairs if a != b), None)
            what = f"{differ[0]}, but {differ[1]} arrived" if differ else "a reserved field set"
            raise ImageError(f"{at}: an index record differs from the records that arrived: {what}")
        return body

    def _check_final(self, final: Manifest, sizes: list[tuple[int, str]], at: str) -> None:
        head = self.manifest
        same = ("image_id", "chunk_size", "pack_limit", "codec", "format_version")
        for key in same:
            if getattr(final, key) != getattr(head, key):
                said = f"{getattr(final, key)!r}, the MANIFEST {getattr(head, key)!r}"
                raise ImageError(f"{at}: END says {key} {said}")
        if final.packs or len(final.regions) != len(head.regions):
            raise ImageError(f"{at}: END lists packs or other regions than the MANIFEST")
        totals = Counters()
        for number, (entry, first) in enumerate(zip(final.regions, head.regions, strict=True)):
            blank = dataclasses.replace(entry, index_size=0, index_xxh3="0" * 32, stats=Counters())
            if blank != first:
                raise ImageError(f"{at}: END's region {entry.name} differs from the MANIFEST's")
            if (entry.index_size, entry.index_xxh3) != sizes[number]:
                raise ImageError(f"{at}: END's index of region {entry.name} is not its INDEX")
            if entry.stats != self._stats[number]:
                raise ImageError(
                    f"{at}: END counts {entry.stats.as_dict()} for region {entry.name};"
                    f" the stream held {self._stats[number].as_dict()}"
                )
            totals.add(entry.stats)
        if final.totals != totals:
            raise ImageError(f"{at}: END totals {final.totals.as_dict()} are not the regions' sum")

    # -- reading ---------------------------------------------------------------------------

    def _check_head_manifest(self, at: str) -> None:
        m = self.manifest
        if m.image_id != self.image_id.hex():
            raise ImageError(f"{at}: MANIFEST image id {m.image_id} is not the stream's")
        if m.packs or any(r.stats != Counters() or r.index_size for r in m.regions):
            raise ImageError(f"{at}: MANIFEST lists packs, indexes or counts (a stream's cannot)")
        if len(m.regions) > stream.MAX_REGIONS:
            raise ImageError(f"{at}: MANIFEST lists {len(m.regions)} regions (at most 65535)")

    def _manifest(self, head: stream.RecordHeader, what: str) -> Manifest:
        at = f"{self._where(self.position - stream.RECORD_HEADER.size)}: {what} record"
        if not stream.BODY_HASH < head.body_length <= stream.MAX_MANIFEST_BODY:
            raise ImageError(f"{at}: body of {head.body_length} bytes is not a manifest")
        body = stream.unseal(self._read(head.body_length, f"the {what} record"), at)
        return parse(body, at)

    def _header(self, what: str) -> stream.RecordHeader:
        at = self._where(self.position)
        return stream.parse_record_header(self._read(stream.RECORD_HEADER.size, what), at)

    def _where(self, position: int) -> str:
        return f"{self.name}, byte {position}"

    def _read(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes, or an ImageError saying where the stream stopped."""
        parts: list[bytes] = []
        got = 0
        while got < size:
            try:
                piece = self.source.read(size - got)
            except OSError as exc:
                raise ImageError(f"{self._where(self.position + got)}: read failed: {exc}") from exc
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        if got < size and self.position + got == 0:
            raise ImageError(f"{self.name}: the stream is empty (nothing arrived)")
        if got < size:
            if got == 0 and what == "a record header":
                what = "the next record (there was no END record)"
                where = "before"
            else:
                where = "inside"
            raise ImageError(
                f"{self._where(self.position + got)}: the stream ends {where} {what}; it is"
                " incomplete (the save did not finish or the transfer was cut); last data"
                f" received: {self._last}"
            )
        self.position += size
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _records(data: Buffer) -> list[Record]:
    """Index records from their packed form (reserved field dropped: it is checked as 0 by the
    comparison with the records that arrived, which the writer packs with 0)."""
    return [
        Record(offset, length, pack, pack_offset, stored, codec, flags, digest)
        for offset, length, pack, pack_offset, stored, codec, flags, _, digest in (
            spec.RECORD.iter_unpack(data)
        )
    ]
