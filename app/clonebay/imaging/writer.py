"""ImageWriter: regions of chunks -> frames in packs + one index per region + manifest.json.

The writer is single-threaded and does all the file I/O of a save: frames are appended to the
current pack (a new pack starts when the next frame would pass ``pack_limit``), each region's
index is written when the region ends, and ``finish`` writes manifest.json last, by atomic
rename after every pack and index is fsynced, so a crash or ``abort`` leaves a directory that
readers report as incomplete rather than an image that looks whole.

Chunks arrive in ascending region offset, either raw (``add_chunk``: hashed and compressed
here) or already encoded by pipeline workers (``add_encoded`` with the result of
``codec.encode_chunk``). Zero chunks never reach a pack: they become ZERO records, merged into
runs. A chunk whose xxh3-128 and length match an earlier frame is stored once; the match is
confirmed by comparing the stored payloads, so a hash collision costs a second frame, never
wrong data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import xxhash

import clonebay
from clonebay.imaging import checkpoint, spec
from clonebay.imaging.checkpoint import Checkpoint, OpenRegionState
from clonebay.imaging.codec import Buffer, EncodedChunk, codec_id, encode_chunk
from clonebay.imaging.imagedir import (
    fsync_dir,
    io_error,
    os_call,
    prepare_directory,
    write_new_file,
)
from clonebay.imaging.manifest import (
    Counters,
    Manifest,
    RegionEntry,
    UnreadableRange,
    to_json,
)
from clonebay.imaging.packfiles import PackAppender
from clonebay.imaging.regionlog import OpenRegion, check_encoded, region_entry
from clonebay.imaging.resumed import drop_later_files, rebuild_dedup
from clonebay.imaging.source_disk import SourceInfo, TableInfo


class ImageWriter:
    """Write one image directory; use as a context manager (an exception aborts)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = spec.DEFAULT_CHUNK_SIZE,
        pack_limit: int = spec.DEFAULT_PACK_LIMIT,
        codec: str = "lz4",
        overwrite: bool = False,
        dedup: bool = True,
        image_id: bytes | None = None,
        resume: Checkpoint | None = None,
    ) -> None:
        """``resume``: go on writing the incomplete image ``path`` from its checkpoint
        (``ImageWriter.resume``) instead of starting an empty one."""
        if not spec.MIN_CHUNK_SIZE <= chunk_size <= spec.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size {chunk_size} outside [{spec.MIN_CHUNK_SIZE}, 64 MiB]")
        smallest = spec.PACK_HEADER.size + spec.FRAME_HEADER.size + chunk_size
        if not smallest <= pack_limit <= spec.MAX_PACK_SIZE:
            raise ValueError(f"pack_limit {pack_limit} outside [{smallest}, 4 GiB - 1]")
        self.path = Path(path)
        self.chunk_size = chunk_size
        self.pack_limit = pack_limit
        self.codec = codec
        self._codec_id = codec_id(codec)
        self._dedup_on = dedup
        if image_id is not None and len(image_id) != 16:
            raise ValueError("image_id must be 16 bytes")
        self._image_id = image_id or os.urandom(16)
        self._region: OpenRegion | None = None
        self._regions: list[RegionEntry] = []
        self._unreadable: list[UnreadableRange] = []
        self._packs = PackAppender(self.path, 0, pack_limit, self._image_id)
        self._read_fds: dict[int, int] = {}
        self._dedup: dict[tuple[bytes, int], tuple[int, int, int, int]] = {}
        self._done = False
        self._checkpointed = 0  # bytes of the open region's records already in its records file
        self.resumed: Checkpoint | None = None
        if resume is not None:
            self._restore(resume)
            return
        try:
            prepare_directory(self.path, overwrite)
        except OSError as exc:
            raise io_error(self.path, exc) from exc

    @classmethod
    def resume(cls, path: str | os.PathLike[str], *, dedup: bool = True) -> ImageWriter:
        """A writer that goes on with the interrupted save in ``path`` from its checkpoint
        (``checkpoint``'s job record is in ``writer.resumed.job``)."""
        point = checkpoint.load(Path(path))
        return cls(
            path, chunk_size=point.chunk_size, pack_limit=point.pack_limit, codec=point.codec,
            dedup=dedup, image_id=point.image_id, resume=point,
        )  # fmt: skip

    def _restore(self, point: Checkpoint) -> None:
        """Take up the state ``point`` recorded; what was written after it is cut away."""
        self.resumed = point
        self._regions = list(point.regions)
        self._unreadable = list(point.unreadable)
        self._packs.reopen(point.packs, point.pack_length, point.pack_frames)
        keep = {e.index_file for e in point.regions}
        drop_later_files(self.path, keep, self._packs.current + (1 if point.pack_length else 0))
        open_records = b""
        if point.open is not None:
            state = point.open
            region = OpenRegion(state.entry)
            region.records += state.records
            region.stats = state.stats
            region.next_offset = state.next_offset
            region.run = state.run
            region.unreadable = list(state.unreadable)
            self._region = region
            self._checkpointed = len(state.records)
            open_records = state.records
        if self._dedup_on:
            self._dedup = rebuild_dedup(self.path, point.regions, open_records)

    def checkpoint(self, job: dict[str, object]) -> None:
        """Make everything added so far durable and record it with ``job`` (the caller's own
        record of where it stands): an interrupted save resumes from the last checkpoint."""
        self._check_open()
        _, length, frames = self._packs.sync()
        region, state = self._region, None
        records = b""
        if region is not None:
            records = bytes(region.records)
            checkpoint.append_records(self.path, region.name, records, self._checkpointed)
            self._checkpointed = len(records)
            state = OpenRegionState(
                region.entry, dataclasses.replace(region.stats), region.next_offset, region.run,
                list(region.unreadable),
            )  # fmt: skip
        point = Checkpoint(
            self._image_id, self.chunk_size, self.pack_limit, self.codec, list(self._regions),
            list(self._packs.packs), list(self._unreadable), length, frames, state, dict(job),
        )  # fmt: skip
        checkpoint.save(self.path, point, len(records), xxhash.xxh3_128_hexdigest(records))

    # -- regions ---------------------------------------------------------------------------

    def declare(
        self,
        regions: Sequence[RegionEntry],
        *,
        source: SourceInfo | None = None,
        table: TableInfo | None = None,
    ) -> None:
        """What the image will hold, before any data (``region_entry`` makes the entries).

        A stream must say it up front (its MANIFEST record); a directory writes its manifest
        last, so here this only checks the call: ``finish`` records what was written.
        """
        self._check_open()

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
        """Start a region (a partition, a raw area such as the post-MBR gap, or a whole disk)."""
        self._check_open()
        if self._region is not None:
            raise ValueError(f"region {self._region.name} is still open: end_region() first")
        if any(r.name == name for r in self._regions):
            raise ValueError(f"region {name} already written")
        entry = region_entry(
            name, kind, disk_offset, size, copy=copy, fstype=fstype, label=label, uuid=uuid,
            state=state, used_bytes=used_bytes, reason=reason, notes=notes, partition=partition,
        )  # fmt: skip
        self._region = OpenRegion(entry)
        self._checkpointed = 0

    def add_chunk(self, offset: int, data: Buffer) -> None:
        """Add raw bytes at ``offset`` in the open region; longer data is split into chunks."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), self.chunk_size):
            piece = view[start : start + self.chunk_size]
            self.add_encoded(offset + start, len(piece), encode_chunk(piece, self._codec_id))

    def add_encoded(self, offset: int, raw_len: int, chunk: EncodedChunk) -> None:
        """Add one chunk of ``raw_len`` bytes at ``offset``, as ``codec.encode_chunk`` made it.

        The payload is written (or compared) before this returns and not kept: its buffer may be
        reused at once.
        """
        region = self._open_region()
        codec, payload, digest, is_zero = chunk
        if is_zero:
            self.add_zero(offset, raw_len)
            return
        check_encoded(raw_len, chunk, self.chunk_size)
        stored = len(payload)
        region.take(offset, raw_len)
        region.flush_run()
        key = (digest, raw_len)
        known = self._dedup.get(key)
        if known is not None and self._same_payload(known, codec, payload):
            pack, pack_offset = known[0], known[1]
            region.stats.dedup_bytes += raw_len
        else:
            pack, pack_offset = self._packs.append(codec, raw_len, payload, digest)
            region.stats.frames += 1
            region.stats.stored_bytes += spec.FRAME_HEADER.size + stored
            if self._dedup_on and known is None:
                self._dedup[key] = (pack, pack_offset, stored, codec)
        region.stats.raw_bytes += raw_len
        region.append(spec.Record(offset, raw_len, pack, pack_offset, stored, codec, 0, digest))

    def add_zero(self, offset: int, length: int) -> None:
        """Record that ``length`` bytes at ``offset`` are zero (copied, but nothing stored)."""
        self._open_region().add_run(spec.FLAG_ZERO, offset, length)

    def add_unreadable(self, offset: int, length: int) -> None:
        """Record bytes the source could not deliver: they read as zeros and are listed."""
        self._open_region().add_run(spec.FLAG_UNREADABLE, offset, length)

    def add_record(self, rec: spec.Record, frame: Buffer | None = None) -> tuple[int, int]:
        """Add one index record exactly as given, for converting a stream: nothing is re-encoded,
        looked up for dedup or merged. A frame record either brings its ``frame`` (header and
        payload as in a pack, appended as is) or names, by ``rec.pack`` and ``rec.pack_offset``,
        a frame this writer appended earlier. Returns where the frame is: (pack, pack offset).
        """
        region = self._open_region()
        region.take(rec.offset, rec.length)
        region.flush_run()
        if rec.flags:
            region.count_run(rec.flags, rec.offset, rec.length)
            region.append_run(rec.flags, rec.offset, rec.length)
            return 0, 0
        if frame is not None:
            view = memoryview(frame).cast("B")
            head = spec.parse_frame_header(view, f"frame for region {region.name} {rec.offset}")
            if head[:1] + head[2:] != (rec.codec, rec.length, rec.stored_length, rec.digest) or (
                len(view) != spec.FRAME_HEADER.size + rec.stored_length
            ):
                raise ValueError(f"region {region.name} {rec.offset}: frame differs from record")
            payload = view[spec.FRAME_HEADER.size :]
            pack, pack_offset = self._packs.append(rec.codec, rec.length, payload, rec.digest)
            region.stats.frames += 1
            region.stats.stored_bytes += len(view)
        else:
            pack, pack_offset = rec.pack, rec.pack_offset
            if pack > self._packs.current or not spec.PACK_HEADER.size <= pack_offset:
                raise ValueError(f"region {region.name} {rec.offset}: no earlier frame there")
            region.stats.dedup_bytes += rec.length
        region.stats.raw_bytes += rec.length
        region.append(rec._replace(pack=pack, pack_offset=pack_offset))
        return pack, pack_offset

    def end_region(self) -> RegionEntry:
        """Write the open region's index file and return its manifest entry."""
        region = self._open_region()
        region.flush_run()
        header = spec.pack_index_header(
            region.stats.records, region.size, self._image_id, region.name
        )
        data = header + region.records
        write_new_file(self.path / spec.INDEX_DIR / region.entry.index_file, [data])
        entry = dataclasses.replace(
            region.entry,
            index_size=len(data),
            index_xxh3=xxhash.xxh3_128_hexdigest(data),
            stats=region.stats,
        )
        self._regions.append(entry)
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
        """Close the last pack, then write manifest.json atomically: the image is complete.

        ``created`` keeps the creation time of an image being converted (default: now).
        """
        self._check_open()
        if self._region is not None:
            raise ValueError(f"region {self._region.name} is still open: end_region() first")
        self._packs.close()
        totals = Counters()
        for entry in self._regions:
            totals.add(entry.stats)
        manifest = Manifest(
            tool=f"clonebay {clonebay.__version__}",
            created=created or utc_now(),
            image_id=self._image_id.hex(),
            chunk_size=self.chunk_size,
            pack_limit=self.pack_limit,
            codec=self.codec,
            regions=tuple(self._regions),
            packs=tuple(self._packs.packs),
            totals=totals,
            source=source or SourceInfo(),
            table=table or TableInfo(),
            warnings=tuple(warnings),
            unreadable=tuple(self._unreadable),
        )
        text = to_json(manifest)  # raises on data JSON cannot carry, before anything is written
        for sub in (spec.PACKS_DIR, spec.INDEX_DIR):
            fsync_dir(self.path / sub)
        tmp = self.path / (spec.MANIFEST_NAME + ".tmp")
        write_new_file(tmp, [text], exclusive=False)
        os_call(tmp, os.replace, tmp, self.path / spec.MANIFEST_NAME)
        fsync_dir(self.path)
        checkpoint.discard(self.path)
        self._release()
        return manifest

    def abort(self) -> None:
        """Stop writing and close files; the directory stays without manifest (incomplete)."""
        self._release()
        with contextlib.suppress(OSError):
            (self.path / (spec.MANIFEST_NAME + ".tmp")).unlink(missing_ok=True)

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None or not self._done:
            self.abort()

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._done:
            raise ValueError(f"image writer for {self.path} is already finished or aborted")

    def _open_region(self) -> OpenRegion:
        self._check_open()
        if self._region is None:
            raise ValueError("no open region: begin_region() first")
        return self._region

    def _same_payload(self, known: tuple[int, int, int, int], codec: int, payload: Buffer) -> bool:
        pack, pack_offset, stored, known_codec = known
        if known_codec != codec or stored != len(payload):
            return False
        at = pack_offset + spec.FRAME_HEADER.size
        found = self._packs.read(pack, stored, at)  # the pack being written: maybe still staged
        if found is None:
            fd = self._read_fds.get(pack)
            path = self._packs.path(pack)
            if fd is None:
                flags = os.O_RDONLY | os.O_CLOEXEC
                fd = self._read_fds[pack] = os_call(path, os.open, path, flags)
            found = os_call(path, os.pread, fd, stored, at)
        return found == (payload if isinstance(payload, bytes) else bytes(payload))

    def _release(self) -> None:
        self._done = True
        with contextlib.suppress(OSError):
            self._packs.abort()
        for fd in self._read_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fds.clear()
        self._dedup.clear()


def utc_now() -> str:
    """The manifest's ``created``: UTC, YYYY-MM-DDTHH:MM:SSZ."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
