"""A disk as a multicast source, sent live (without saving an image first).

A receiver needs the whole catalog (every frame's length, codec and hash, docs/multicast.md §3)
before the first datagram, so the sender reads the disk twice:

1. **Map.** The disk is saved exactly as ``clonebay save DISK -`` would (probe, used extents,
   chunks, LZ4, xxh3-128, dedup), into a pipe that a stream reader empties at once: what is kept
   is the final manifest and every record (FRAME: region, offset, codec, lengths, hash; ZERO,
   UNREADABLE; REF: which earlier frame). The payloads are dropped, so memory stays at the
   catalog's size whatever the disk's.
2. **Send.** An object's payload is made again when it is needed (first pass or a repair): the
   chunk is read from the disk at the region's offset and encoded with the same codec, and must
   give the same hash and stored length; a source that changed in between is an error, never
   wrong data on a receiver.

The source is opened read-only (and set read-only in the kernel, as for every save) for the
whole session.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from clonebay.engine.multicast.catalog import CatalogBuilder
from clonebay.engine.save import SaveOptions, save
from clonebay.errors import ClonebayError, InputError
from clonebay.imaging import stream
from clonebay.imaging.codec import encode_chunk
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.spec import CODEC_NAMES, Record
from clonebay.imaging.stream_read import StreamEnd, StreamReader
from clonebay.model import Progress
from clonebay.system.blockdev import SourceDevice


class SourceChangedError(InputError):
    """The disk being sent changed during the session."""

    title = "Source changed"


class DiskObjects:
    """A disk's chunks as multicast objects; close() releases the disk."""

    def __init__(self, disk: str, progress: Callable[[Progress], None] | None = None) -> None:
        self.disk = disk
        self.where: list[tuple[int, Record]] = []  # per object: disk offset, its frame record
        manifest, build = self._map(disk, progress)
        self.manifest = manifest
        self.catalog = build.catalog(manifest)
        self.sizes = build.sizes
        self.source = SourceDevice(disk)

    def _map(
        self, disk: str, progress: Callable[[Progress], None] | None
    ) -> tuple[Manifest, CatalogBuilder]:
        """Pass 1: save into a pipe, keep the records."""
        rfd, wfd = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            with open(wfd, "wb") as out:
                try:
                    save(disk, out, SaveOptions(), progress=progress)
                except BaseException as exc:  # forwarded to the reading thread below
                    failure.append(exc)

        saver = threading.Thread(target=produce, name="clonebay-map", daemon=True)
        saver.start()
        build = CatalogBuilder()
        first: dict[tuple[int, int], int] = {}
        end: StreamEnd | None = None
        try:
            with open(rfd, "rb") as src:
                reader = StreamReader(src, disk)
                offsets = [r.disk_offset for r in reader.regions]
                for event in reader.events():
                    if isinstance(event, StreamEnd):
                        end = event
                        break
                    number = -1
                    if event.kind == stream.REC_FRAME:
                        number = first[(event.region, event.offset)] = build.new_object(
                            event.record
                        )
                        self.where.append((offsets[event.region] + event.offset, event.record))
                    elif event.kind == stream.REC_REF and event.source is not None:
                        number = first[event.source]
                    build.add(event.name, event.record, number)
        except ClonebayError:
            saver.join()
            if failure:
                raise failure[0] from None
            raise
        saver.join()
        if failure:
            raise failure[0]
        assert end is not None  # events() ends with StreamEnd or raises
        return end.manifest, build

    def body(self, number: int) -> bytes:
        """Pass 2: the object's payload, made again from the disk and checked."""
        at, rec = self.where[number]
        data = _pread(self.source.fd, rec.length, at)
        encoded = encode_chunk(data, CODEC_NAMES[rec.codec])
        if (
            encoded.digest != rec.digest
            or encoded.codec != rec.codec
            or len(encoded.payload) != rec.stored_length
        ):
            raise SourceChangedError(
                f"{self.disk}: the {rec.length} bytes at byte {at} changed since the session"
                " began (is something writing to the disk being sent?); receivers stop rather"
                " than get data that does not match its hash"
            )
        return bytes(encoded.payload)

    def close(self) -> None:
        self.source.close()


def _pread(fd: int, length: int, offset: int) -> bytes:
    parts, got = [], 0
    while got < length:
        piece = os.pread(fd, length - got, offset + got)
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)
