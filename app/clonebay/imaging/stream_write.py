"""StreamWriter: an image as one byte stream (docs/format.md §10), for pipes, ssh and tape.

It has the public API of ``ImageWriter`` (``begin_region``, ``add_chunk``, ``add_encoded``,
``add_zero``, ``add_unreadable``, ``end_region``, ``finish``, ``abort``, context manager), so a
save can write either form, plus ``declare``: a stream opens with a MANIFEST record that lists
every region before any data, so the regions, the source and the partition table must be known
before the first chunk (``ImageWriter.declare`` accepts the same call and ignores it).

The output is any binary file object (stdout, a pipe, a socket file); it is written front to
back and never seeked or read. Each chunk becomes one record as it arrives: a FRAME (the frame
exactly as in a pack), a ZERO or UNREADABLE run (merged as in an index), or a REF when an earlier
FRAME holds the same bytes. A stream cannot be read back to compare payloads, so dedup keeps the
payloads of recent frames in memory (``dedup_memory``, 64 MiB by default) and makes a REF only
when hash, length and payload all match one of them: exact, like a directory's dedup, but only
within that window. After the last region come one INDEX record per region and the END record
with the final manifest; a stream without END is incomplete.

``add_frame``, ``add_ref`` and ``add_run`` write records exactly as given: converting a directory
image into a stream copies frames without decoding or re-encoding them.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence
from types import TracebackType
from typing import IO, NamedTuple

import xxhash

import clonebay
from clonebay.errors import DeviceError
from clonebay.imaging import spec, stream
from clonebay.imaging.codec import Buffer, EncodedChunk, codec_id, encode_chunk
from clonebay.imaging.imagedir import io_error
from clonebay.imaging.manifest import Counters, Manifest, RegionEntry, UnreadableRange, to_json
from clonebay.imaging.regionlog import OpenRegion, check_encoded, region_entry
from clonebay.imaging.source_disk import SourceInfo, TableInfo
from clonebay.imaging.writer import utc_now

DEDUP_MEMORY = 64 << 20  # payloads kept to confirm dedup: 16 raw 4 MiB chunks, more if LZ4'd
PLACEHOLDER_XXH3 = "0" * 32  # a MANIFEST record's regions have no index yet (docs/format.md §10)
MAX_RUN_RECORD = 0xFFFF_FFFF  # an index record's length is a u32


class _Frame(NamedTuple):
    """A FRAME already in the stream: where REFs and INDEX records point."""

    region: int
    offset: int
    raw_length: int
    codec: int
    stored: int
    digest: bytes
    stream_offset: int  # of the frame header


class StreamWriter:
    """Write one image as a stream to ``out``; use as a context manager (an exception aborts)."""

    def __init__(
        self,
        out: IO[bytes],
        *,
        chunk_size: int = spec.DEFAULT_CHUNK_SIZE,
        pack_limit: int = spec.DEFAULT_PACK_LIMIT,
        codec: str = "lz4",
        dedup: bool = True,
        dedup_memory: int = DEDUP_MEMORY,
        image_id: bytes | None = None,
        created: str | None = None,
        name: str = "stream",
    ) -> None:
        if not spec.MIN_CHUNK_SIZE <= chunk_size <= spec.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size {chunk_size} outside [{spec.MIN_CHUNK_SIZE}, 64 MiB]")
        smallest = spec.PACK_HEADER.size + spec.FRAME_HEADER.size + chunk_size
        if not smallest <= pack_limit <= spec.MAX_PACK_SIZE:
            raise ValueError(f"pack_limit {pack_limit} outside [{smallest}, 4 GiB - 1]")
        if image_id is not None and len(image_id) != 16:
            raise ValueError("image_id must be 16 bytes")
        self.out = out
        self.name = name
        self.chunk_size = chunk_size
        self.pack_limit = pack_limit
        self.codec = codec
        self._codec_id = codec_id(codec)
        self._image_id = image_id or os.urandom(16)
        self._created = created
        self._dedup_budget = dedup_memory if dedup else 0
        self._dedup: collections.OrderedDict[tuple[bytes, int], tuple[_Frame, bytes]]
        self._dedup = collections.OrderedDict()
        self._dedup_bytes = 0
        self._frames: dict[tuple[int, int], _Frame] = {}
        self._declared: list[RegionEntry] = []
        self._source = SourceInfo()
        self._table = TableInfo()
        self._regions: list[RegionEntry] = []
        self._unreadable: list[UnreadableRange] = []
        self._indexes: list[bytes] = []
        self._region: OpenRegion | None = None
        self.position = 0  # bytes written to the stream so far
        self._started = False
        self._done = False

    # -- regions ---------------------------------------------------------------------------

    def declare(
        self,
        regions: Sequence[RegionEntry],
        *,
        source: SourceInfo | None = None,
        table: TableInfo | None = None,
    ) -> None:
        """Write the stream header and the MANIFEST record: every region, before any data."""
        self._check_open()
        if self._started:
            raise ValueError("declare() may be called once, before the first region")
        if len(regions) > stream.MAX_REGIONS:
            raise ValueError(f"{len(regions)} regions: a stream holds at most {stream.MAX_REGIONS}")
        if len({r.name for r in regions}) != len(regions):
            raise ValueError("two regions with the same name")
        self._declared = [_blank(r) for r in regions]
        self._source, self._table = source or SourceInfo(), table or TableInfo()
        created = self._created = self._created or utc_now()  # END repeats it (§10)
        head = [dataclasses.replace(r, index_xxh3=PLACEHOLDER_XXH3) for r in self._declared]
        text = to_json(
            self._manifest(tuple(head), created=created, source=self._source, table=self._table)
        )
        self._started = True
        self._write(stream.pack_stream_header(self._image_id))
        self._emit(stream.REC_MANIFEST, 0, 0, 0, [stream.seal(text)])

    def begin_region(
        self,
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
    ) -> None:
        """Start the next declared region; its metadata must be what ``declare`` said."""
        self._check_open()
        if not self._started:
            raise ValueError("a stream lists its regions first: declare() before begin_region()")
        if self._region is not None:
            raise ValueError(f"region {self._region.name} is still open: end_region() first")
        entry = region_entry(
            name, kind, disk_offset, size, copy=copy, fstype=fstype, label=label, uuid=uuid,
            state=state, used_bytes=used_bytes, reason=reason, notes=notes, partition=partition,
        )  # fmt: skip
        position = len(self._regions)
        if position >= len(self._declared) or self._declared[position] != entry:
            expected = self._declared[position].name if position < len(self._declared) else None
            raise ValueError(
                f"region {name} is not the next declared region ({expected or 'none left'})"
                " or differs from what declare() said"
            )
        self._region = OpenRegion(entry)

    def add_chunk(self, offset: int, data: Buffer) -> None:
        """Add raw bytes at ``offset`` in the open region; longer data is split into chunks."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), self.chunk_size):
            piece = view[start : start + self.chunk_size]
            self.add_encoded(offset + start, len(piece), encode_chunk(piece, self._codec_id))

    def add_encoded(self, offset: int, raw_len: int, chunk: EncodedChunk) -> None:
        """Add one chunk as ``codec.encode_chunk`` made it; it is written before this returns."""
        region = self._open_region()
        codec, payload, digest, is_zero = chunk
        if is_zero:
            self.add_zero(offset, raw_len)
            return
        check_encoded(raw_len, chunk, self.chunk_size)
        key = (digest, raw_len)
        known = self._dedup.get(key)
        if known is not None and known[0].codec == codec and _same(known[1], payload):
            self._dedup.move_to_end(key)
            self._ref(region, offset, raw_len, known[0], digest)
            return
        frame = self._frame(region, offset, raw_len, chunk)
        if self._dedup_budget and known is None and len(payload) <= self._dedup_budget:
            kept = payload if isinstance(payload, bytes) else bytes(payload)
            self._dedup[key] = (frame, kept)
            self._dedup_bytes += len(kept)
            while self._dedup_bytes > self._dedup_budget:
                _, (_, old) = self._dedup.popitem(last=False)
                self._dedup_bytes -= len(old)

    def add_zero(self, offset: int, length: int) -> None:
        """Record that ``length`` bytes at ``offset`` are zero (copied, but nothing stored)."""
        self._runs(self._open_region().add_run(spec.FLAG_ZERO, offset, length))

    def add_unreadable(self, offset: int, length: int) -> None:
        """Record bytes the source could not deliver: they read as zeros and are listed."""
        self._runs(self._open_region().add_run(spec.FLAG_UNREADABLE, offset, length))

    def add_frame(self, offset: int, frame: Buffer) -> None:
        """A FRAME record carrying ``frame`` (header and payload, as in a pack) unchanged."""
        region = self._open_region()
        view = memoryview(frame).cast("B")
        head = spec.parse_frame_header(view, f"frame for region {region.name} offset {offset}")
        if len(view) != spec.FRAME_HEADER.size + head.stored_length:
            raise ValueError(f"region {region.name} {offset}: frame length differs from header")
        chunk = EncodedChunk(head.codec, view[spec.FRAME_HEADER.size :], head.digest, False)
        check_encoded(head.raw_length, chunk, self.chunk_size)
        self._frame(region, offset, head.raw_length, chunk)

    def add_ref(self, offset: int, length: int, region: str, first: int, digest: bytes) -> None:
        """A REF record: ``length`` bytes at ``offset`` repeat the FRAME at ``first`` of
        ``region`` (written earlier in this stream), whose xxh3-128 is ``digest``."""
        current = self._open_region()
        names = [r.name for r in self._declared]
        frame = self._frames.get((names.index(region) if region in names else -1, first))
        if frame is None or (frame.raw_length, frame.digest) != (length, digest):
            raise ValueError(f"region {region} offset {first}: no such FRAME to refer to")
        self._ref(current, offset, length, frame, digest)

    def add_run(self, flags: int, offset: int, length: int) -> None:
        """One ZERO or UNREADABLE record exactly as given (not merged with its neighbours)."""
        region = self._open_region()
        if flags not in (spec.FLAG_ZERO, spec.FLAG_UNREADABLE) or length > MAX_RUN_RECORD:
            raise ValueError(f"run flags {flags} / length {length} cannot be one record")
        region.take(offset, length)
        self._runs(region.flush_run())
        region.count_run(flags, offset, length)
        self._runs(region.append_run(flags, offset, length))

    def end_region(self) -> RegionEntry:
        """Close the open region; its INDEX record follows the last region."""
        region = self._open_region()
        self._runs(region.flush_run())
        header = spec.pack_index_header(
            region.stats.records, region.size, self._image_id, region.name
        )
        data = header + region.records
        entry = dataclasses.replace(
            region.entry,
            index_size=len(data),
            index_xxh3=xxhash.xxh3_128_hexdigest(data),
            stats=region.stats,
        )
        self._regions.append(entry)
        self._indexes.append(data)
        self._unreadable.extend(region.unreadable)
        self._region = None
        return entry

    # -- finishing -------------------------------------------------------------------------

    def finish(
        self,
        *,
        source: SourceInfo | None = None,
        table: TableInfo | None = None,
        warnings: Sequence[str] = (),
        created: str | None = None,
    ) -> Manifest:
        """Write one INDEX record per region, then END with the final manifest; flush."""
        self._check_open()
        if self._region is not None:
            raise ValueError(f"region {self._region.name} is still open: end_region() first")
        if not self._started or len(self._regions) != len(self._declared):
            missing = [r.name for r in self._declared[len(self._regions) :]]
            raise ValueError(f"declared regions not written: {', '.join(missing) or 'none'}")
        manifest = self._manifest(
            tuple(self._regions),
            created=created or self._created or utc_now(),  # by default, when declare() ran
            source=self._source if source is None else source,
            table=self._table if table is None else table,
            warnings=tuple(warnings),
            unreadable=tuple(self._unreadable),
        )
        text = to_json(manifest)  # raises on data JSON cannot carry, before INDEX is written
        for number, data in enumerate(self._indexes):
            self._emit(stream.REC_INDEX, number, 0, 0, [stream.seal(data)])
        self._emit(stream.REC_END, 0, 0, 0, [stream.seal(text)])
        self._flush()
        self._release()
        return manifest

    def abort(self) -> None:
        """Stop writing: the stream ends without END, so every reader calls it incomplete."""
        self._release()

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None or not self._done:
            self.abort()

    # -- internals -------------------------------------------------------------------------

    def _manifest(
        self,
        regions: tuple[RegionEntry, ...],
        *,
        created: str,
        source: SourceInfo,
        table: TableInfo,
        warnings: tuple[str, ...] = (),
        unreadable: tuple[UnreadableRange, ...] = (),
    ) -> Manifest:
        totals = Counters()
        for entry in regions:
            totals.add(entry.stats)
        return Manifest(
            tool=f"clonebay {clonebay.__version__}",
            created=created,
            image_id=self._image_id.hex(),
            chunk_size=self.chunk_size,
            pack_limit=self.pack_limit,
            codec=self.codec,
            regions=regions,
            packs=(),
            totals=totals,
            source=source,
            table=table,
            warnings=warnings,
            unreadable=unreadable,
        )

    def _check_open(self) -> None:
        if self._done:
            raise ValueError(f"stream writer for {self.name} is already finished or aborted")

    def _open_region(self) -> OpenRegion:
        self._check_open()
        if self._region is None:
            raise ValueError("no open region: begin_region() first")
        return self._region

    def _frame(self, region: OpenRegion, offset: int, raw_len: int, chunk: EncodedChunk) -> _Frame:
        codec, payload, digest, _ = chunk
        region.take(offset, raw_len)
        self._runs(region.flush_run())
        stored = len(payload)
        header = spec.pack_frame_header(codec, raw_len, stored, digest)
        number = len(self._regions)
        at = self.position + stream.RECORD_HEADER.size
        frame = _Frame(number, offset, raw_len, codec, stored, digest, at)
        self._emit(stream.REC_FRAME, number, offset, raw_len, [header, payload])
        self._frames[(number, offset)] = frame
        region.stats.frames += 1
        region.stats.stored_bytes += spec.FRAME_HEADER.size + stored
        region.stats.raw_bytes += raw_len
        region.append(
            spec.Record(
                offset, raw_len, stream.STREAM_PACK, frame.stream_offset, stored, codec, 0, digest
            )
        )
        return frame

    def _ref(
        self, region: OpenRegion, offset: int, length: int, frame: _Frame, digest: bytes
    ) -> None:
        region.take(offset, length)
        self._runs(region.flush_run())
        body = stream.pack_ref_body(frame.region, frame.offset, digest)
        self._emit(stream.REC_REF, len(self._regions), offset, length, [body])
        region.stats.raw_bytes += length
        region.stats.dedup_bytes += length
        rec = spec.Record(offset, length, stream.STREAM_PACK, frame.stream_offset, 0, 0, 0, digest)
        region.append(rec._replace(stored_length=frame.stored, codec=frame.codec))

    def _runs(self, records: list[spec.Record]) -> None:
        kinds = {spec.FLAG_ZERO: stream.REC_ZERO, spec.FLAG_UNREADABLE: stream.REC_UNREADABLE}
        for rec in records:
            self._emit(kinds[rec.flags], len(self._regions), rec.offset, rec.length, [])

    def _emit(self, kind: int, region: int, offset: int, length: int, body: list[Buffer]) -> None:
        size = sum(len(b) for b in body)
        self._write(stream.pack_record_header(kind, region, offset, length, size))
        for part in body:
            self._write(part)

    def _write(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        try:
            while view:
                n = self.out.write(view)
                if n is None:  # a non-blocking file object: not supported, never spin
                    raise BlockingIOError(11, "the stream's file object is non-blocking")
                self.position += n
                view = view[n:]
        except BrokenPipeError:
            self._done = True
            raise DeviceError(
                f"{self.name}: the receiving end closed the stream at byte {self.position}"
                " (broken pipe): the image was not completely sent"
            ) from None
        except OSError as exc:
            self._done = True
            error = io_error(self.name, exc)
            error.message = (
                f"{self.name}: writing the stream failed at byte {self.position}:"
                f" {exc.strerror or exc}"
            )
            raise error from exc

    def _flush(self) -> None:
        try:
            self.out.flush()
        except OSError as exc:
            raise DeviceError(f"{self.name}: flushing the stream failed: {exc}") from exc

    def _release(self) -> None:
        self._done = True
        self._dedup.clear()
        self._frames.clear()


def _blank(entry: RegionEntry) -> RegionEntry:
    """``entry`` as ``region_entry`` makes it (no index, no stats): what begin_region compares."""
    return dataclasses.replace(
        entry, index_file=spec.index_name(entry.name), index_size=0, index_xxh3="", stats=Counters()
    )


def _same(kept: bytes, payload: Buffer) -> bool:
    """Byte comparison; bytes == memoryview would go item by item (~40x slower than memcmp)."""
    return len(kept) == len(payload) and kept == (
        payload if isinstance(payload, bytes) else bytes(payload)
    )
