"""Converting between the two forms of an image without decoding into new frames.

stream -> directory: every FRAME's frame (header and payload, as received) is appended to the
packs unchanged, every record becomes one index record, a REF points at the pack location of
the FRAME it repeats, and the manifest comes from END (its creation time kept). The image id and
pack limit are the stream's, so the directory is the one the stream was made from.

directory -> stream: each region's index records in order; the first record to use a frame
becomes a FRAME carrying the frame as read from its pack (checked: header against the record,
payload decoded and hashed), later ones a REF to it; ZERO / UNREADABLE records are copied as
they are. directory -> stream -> directory therefore gives byte-identical packs, indexes and
manifest (docs/format.md §10).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from clonebay.imaging import spec, stream
from clonebay.imaging.frame_check import decode_frame, frame_at
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.regionlog import entry_fields
from clonebay.imaging.spec import ImageError, Record, where
from clonebay.imaging.stream_read import StreamEnd, StreamReader
from clonebay.imaging.stream_write import StreamWriter
from clonebay.imaging.writer import ImageWriter

Advance = Callable[[str, int, int], None]  # (region, bytes done, bytes to do) after each record


def stream_to_directory(
    source: IO[bytes],
    path: str | os.PathLike[str],
    *,
    name: str = "stream",
    overwrite: bool = False,
    progress: Advance | None = None,
) -> Manifest:
    """Read the stream ``source`` into the image directory ``path``; returns its manifest.

    A stream that turns out damaged or incomplete leaves ``path`` an incomplete image (no
    manifest.json), as an interrupted save would.
    """
    reader = StreamReader(source, name)
    head = reader.manifest
    with ImageWriter(
        path,
        chunk_size=head.chunk_size,
        pack_limit=head.pack_limit,
        codec=head.codec,
        overwrite=overwrite,
        image_id=bytes.fromhex(head.image_id),
    ) as writer:
        locations: dict[tuple[int, int], tuple[int, int]] = {}
        opened = -1  # position of the open region

        def open_through(number: int) -> None:
            nonlocal opened
            while opened < number:
                if opened >= 0:
                    writer.end_region()
                opened += 1
                if opened < len(head.regions):
                    writer.begin_region(**entry_fields(head.regions[opened]))

        end: StreamEnd | None = None
        done, total = 0, sum(r.used_bytes for r in head.regions)
        for event in reader.events():
            if isinstance(event, StreamEnd):
                end = event
                break
            open_through(event.region)
            rec = event.record
            if event.kind == stream.REC_FRAME:
                locations[(event.region, rec.offset)] = writer.add_record(rec, event.frame)
            elif event.source is not None:
                pack, pack_offset = locations[event.source]
                writer.add_record(rec._replace(pack=pack, pack_offset=pack_offset))
            else:
                writer.add_record(rec)
            done += rec.length
            if progress is not None:
                progress(event.name, done, total)
        assert end is not None  # events() ends with StreamEnd or raises
        open_through(len(head.regions))
        final = end.manifest
        return writer.finish(
            source=final.source, table=final.table, warnings=final.warnings, created=final.created
        )


def directory_to_stream(
    path: str | os.PathLike[str],
    out: IO[bytes],
    *,
    name: str = "stream",
    progress: Advance | None = None,
) -> Manifest:
    """Write the image directory ``path`` as a stream to ``out``; returns the END manifest."""
    with ImageReader(path) as reader, _Packs(reader) as packs:
        m = reader.manifest
        with StreamWriter(
            out,
            chunk_size=m.chunk_size,
            pack_limit=m.pack_limit,
            codec=m.codec,
            image_id=bytes.fromhex(m.image_id),
            created=m.created,
            name=name,
        ) as writer:
            writer.declare(m.regions, source=m.source, table=m.table)
            first: dict[tuple[int, int], tuple[str, Record]] = {}
            done = 0
            for entry in m.regions:
                writer.begin_region(**entry_fields(entry))
                for rec in reader.records(entry.name):
                    _copy(writer, packs, entry.name, rec, first)
                    done += rec.length
                    if progress is not None:
                        progress(entry.name, done, m.totals.copied_bytes)
                writer.end_region()
            return writer.finish(
                source=m.source, table=m.table, warnings=m.warnings, created=m.created
            )


def _copy(
    writer: StreamWriter,
    packs: _Packs,
    region: str,
    rec: Record,
    first: dict[tuple[int, int], tuple[str, Record]],
) -> None:
    """One index record of ``region`` into the stream (``first``: frames already sent)."""
    if rec.flags:
        writer.add_run(rec.flags, rec.offset, rec.length)
        return
    key = (rec.pack, rec.pack_offset)
    if key not in first:
        writer.add_frame(rec.offset, packs.frame(region, rec))
        first[key] = (region, rec)
        return
    first_region, earlier = first[key]
    if earlier[1:] != rec[1:]:
        raise ImageError(
            f"{where(packs.file(rec), region, rec.offset)}: shares a frame with region"
            f" {first_region} offset {earlier.offset} but their records differ"
        )
    writer.add_ref(rec.offset, rec.length, first_region, earlier.offset, rec.digest)


class _Packs:
    """Raw frames (header and payload) read from an image's packs, each checked first."""

    def __init__(self, reader: ImageReader) -> None:
        self.paths = [reader.path / spec.PACKS_DIR / p.name for p in reader.manifest.packs]
        self._fds: dict[int, int] = {}

    def file(self, rec: Record) -> str:
        return str(self.paths[rec.pack])

    def frame(self, region: str, rec: Record) -> bytes:
        at = frame_at(self.file(rec), region, rec)
        try:
            fd = self._fds.get(rec.pack)
            if fd is None:
                fd = self._fds[rec.pack] = os.open(self.paths[rec.pack], os.O_RDONLY)
            raw = os.pread(fd, spec.FRAME_HEADER.size + rec.stored_length, rec.pack_offset)
        except OSError as exc:
            raise ImageError(f"{at}: read failed ({exc.strerror or exc})") from None
        decode_frame(raw, rec, at)
        return raw

    def __enter__(self) -> _Packs:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def is_stream_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file that starts like a clonebay stream."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        with p.open("rb") as f:
            return f.read(len(stream.STREAM_MAGIC)) == stream.STREAM_MAGIC
    except OSError:
        return False
