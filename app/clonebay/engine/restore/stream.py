"""Restore from an image stream (docs/format.md §10) as it arrives: stdin, a pipe, a stream file,
a TCP sender.

A stream cannot be checked before the first write (it is read once), so its records are checked
one by one as they arrive (the reader decodes and hash-checks every FRAME) and the Plan says so.
This module only reads and feeds the one target path (engine/target/), which keeps the safe order.
The stream forces one difference from a directory: its raw areas arrive in disk order, so the area
at offset 0 comes first; the target path holds the parts of them where tables live until every
partition is written and the END record has confirmed that the whole stream arrived intact.

FRAMEs are written, ZERO runs zeroed, UNREADABLE runs zeroed and reported, and a REF is copied
from where its FRAME was written (read back from the target and hash-checked) or from memory
when that FRAME is held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import IO

from clonebay.engine.restore.placements import (
    Placement,
    RestoreOptions,
    plan_target,
    unreadable_note,
)
from clonebay.engine.target import TargetPath
from clonebay.errors import CancelledError
from clonebay.imaging import stream
from clonebay.imaging.codec import Buffer
from clonebay.imaging.spec import ImageError
from clonebay.imaging.stream_read import StreamChunk, StreamEnd, StreamReader
from clonebay.model import Progress
from clonebay.system.blockdev import is_block_device
from clonebay.system.run import run

STREAM_NOTE = "a stream cannot be checked before writing: each frame is checked as it arrives"


def restore_stream(
    source: IO[bytes],
    target: str,
    options: RestoreOptions | None = None,
    *,
    name: str = "stream",
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Restore the stream ``source`` onto ``target``; returns warnings, like ``restore``."""
    cancel = cancel or threading.Event()
    options = options or RestoreOptions()
    reader = StreamReader(source, name)  # header and MANIFEST: nothing written yet
    manifest = reader.manifest
    plan = plan_target("restore", manifest, target, options)
    job = plan.job
    path = TargetPath(job, progress=progress, cancel=cancel)
    with path, path.writing():
        path.begin()
        apply = _Apply(reader, path, plan.placements, whole_disk=plan.region is None)
        apply.run(cancel)
        result = path.finish()
    if is_block_device(target):
        run(["blockdev", "--rereadpt", target], check=False)
    return apply.warnings + result.warnings + list(job.notes) + result.done


class _Apply:
    """Feeds a stream's records to the target path."""

    def __init__(
        self,
        reader: StreamReader,
        path: TargetPath,
        placements: list[Placement],
        *,
        whole_disk: bool,
    ) -> None:
        self.reader = reader
        self.path = path
        position = {r.name: i for i, r in enumerate(reader.regions)}
        self.places = {position[p.region.name]: p for p in placements}
        self.held = {
            i for i, p in self.places.items() if whole_disk and p.region.kind == "raw-area"
        }
        self.held_frames: dict[tuple[int, int], Buffer] = {}
        self.warnings: list[str] = []

    def run(self, cancel: threading.Event) -> StreamEnd:
        for event in self.reader.events():
            if cancel.is_set():
                raise CancelledError("restore cancelled")
            if isinstance(event, StreamEnd):
                return event
            if event.region not in self.places:
                continue  # another region than the one being restored
            self._apply(event)
        raise ImageError(f"{self.reader.name}: the stream ended without its END record")

    def _apply(self, event: StreamChunk) -> None:
        place = self.places[event.region]
        at = place.target_offset + event.offset
        data = self._data(event)
        if event.kind == stream.REC_UNREADABLE:
            self.warnings.append(unreadable_note(event.name, event.offset, event.length))
        if event.region in self.held:
            kept = self.path.hold(event.name, at, data, event.length)
            if kept and data is not None and event.kind == stream.REC_FRAME:
                self.held_frames[(event.region, event.offset)] = data
        elif data is None:
            self.path.put_zero(event.name, at, event.length)
        else:
            self.path.put(event.name, at, data, event.record.digest)

    def _data(self, event: StreamChunk) -> Buffer | None:
        """The bytes a FRAME or REF puts on the target (None for ZERO / UNREADABLE)."""
        if event.kind == stream.REC_FRAME:
            return event.data
        if event.kind != stream.REC_REF or event.source is None:
            return None
        src_region, src_offset = event.source
        held = self.held_frames.get(event.source)
        if held is not None:
            return held
        place = self.places.get(src_region)
        where = f"region {event.name} offset {event.offset} repeats region"
        where += f" {self.reader.regions[src_region].name} offset {src_offset}"
        if place is None:
            raise ImageError(
                f"{self.reader.name}: {where}, which is not being restored. Restore the whole"
                " stream, or convert it into a directory image first (clonebay convert) and"
                " restore the region from that"
            )
        at = place.target_offset + src_offset
        return self.path.read_back(at, event.length, event.record.digest, where)
