"""Copy-on-write over an image's regions: what ``clonebay edit`` writes, kept beside the image.

An image is never written while it is edited. The first write into a chunk (the image's
``chunk_size`` grid, 4 MiB by default) copies that chunk's current bytes from the image into a
sparse scratch file per region (``REGION.chunks``, at the same offset) and notes the chunk in
an append-only journal (``dirty.log``); that write and every later read or write of the chunk
use the scratch file. Reads of clean chunks go to the image through ``read_at``.

``clonebay umount --commit`` hands the dirty chunks to imaging/revise.py, which appends them to
the image as new frames and a new index revision; ``clonebay umount`` without it deletes the
scratch folder, and the image is byte for byte what it was. The journal is fsynced whenever
the filesystem driver asks for a flush, so a commit after a crash of the view still knows every
chunk that was written. ``base.json`` records the manifest's checksum at the start of the edit:
a commit onto an image that changed meanwhile is refused.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import xxhash

from clonebay.errors import SafetyError
from clonebay.imaging import spec
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.revise import ImageReviser

JOURNAL = "dirty.log"
BASE = "base.json"


def manifest_digest(image: Path) -> str:
    """xxh3-128 of manifest.json as it is on disk: which revision of the image an edit began on."""
    return xxhash.xxh3_128_hexdigest((image / spec.MANIFEST_NAME).read_bytes())


class Overlay:
    """Reads and writes of regions, copy-on-write in ``scratch`` over ``reader``'s image."""

    def __init__(self, reader: ImageReader, scratch: Path) -> None:
        self.reader = reader
        self.scratch = scratch
        self.chunk = reader.manifest.chunk_size
        self.dirty: dict[str, set[int]] = {r.name: set() for r in reader.regions}
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        scratch.mkdir(parents=True, exist_ok=True)
        base = scratch / BASE
        if base.exists():
            self._check_base(json.loads(base.read_text()))
        else:
            base.write_text(json.dumps({"manifest_xxh3": manifest_digest(reader.path)}))
        for region, index in _journal_entries(scratch / JOURNAL):
            self.dirty.setdefault(region, set()).add(index)
        self._journal = os.open(
            scratch / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )

    def _check_base(self, base: dict[str, str]) -> None:
        if base.get("manifest_xxh3") != manifest_digest(self.reader.path):
            raise SafetyError(
                f"{self.reader.path} changed since this edit began (another edit was committed);"
                f" the changes in {self.scratch} no longer apply: unmount without --commit"
            )

    def _fd(self, region: str) -> int:
        fd = self._fds.get(region)
        if fd is None:
            path = self.scratch / f"{region}.chunks"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fds[region] = fd
        return fd

    def _pieces(self, region: str, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(chunk index, offset, length) of each chunk-grid piece of a range inside the region."""
        end = min(offset + length, self.reader.region(region).size)
        pos = offset
        while pos < end:
            index = pos // self.chunk
            stop = min(end, (index + 1) * self.chunk)
            yield index, pos, stop - pos
            pos = stop

    def read(self, region: str, offset: int, length: int) -> bytes:
        """The region's current bytes (fewer at its end, like pread)."""
        parts = []
        for index, pos, size in self._pieces(region, offset, length):
            if index in self.dirty[region]:
                parts.append(os.pread(self._fd(region), size, pos))
            else:
                parts.append(self.reader.read_at(region, pos, size))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, region: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; a chunk is copied up from the image on its first write."""
        size = self.reader.region(region).size
        if offset + len(data) > size:
            raise OSError(28, f"write past the end of region {region} ({size} bytes)")
        view = memoryview(data)
        with self._lock:
            for index, pos, part in self._pieces(region, offset, len(data)):
                fd = self._fd(region)
                if index not in self.dirty[region]:
                    start = index * self.chunk
                    whole = self.reader.read_at(region, start, min(self.chunk, size - start))
                    os.pwrite(fd, whole, start)
                    os.write(self._journal, f"{region} {index}\n".encode())
                    self.dirty[region].add(index)
                os.pwrite(fd, view[pos - offset : pos - offset + part], pos)
        return len(data)

    def flush(self) -> None:
        """Make every write so far durable in the scratch folder (journal last)."""
        with self._lock:
            for fd in self._fds.values():
                os.fsync(fd)
            os.fsync(self._journal)

    def dirty_ranges(self, region: str) -> list[tuple[int, int]]:
        size = self.reader.region(region).size
        return [
            (i * self.chunk, min((i + 1) * self.chunk, size)) for i in sorted(self.dirty[region])
        ]

    def close(self) -> None:
        with self._lock:
            for fd in [*self._fds.values(), self._journal]:
                os.close(fd)
            self._fds.clear()


def _journal_entries(path: Path) -> Iterator[tuple[str, int]]:
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        region, _, index = line.partition(" ")
        if region and index.isdigit():  # a torn last line (crash mid-write) names no chunk
            yield region, int(index)


def changed_chunks(scratch: Path) -> int:
    """How many chunks an edit wrote (0: nothing to commit)."""
    return len(set(_journal_entries(scratch / JOURNAL)))


def commit(image: Path, scratch: Path, note: str = "") -> Manifest | None:
    """Append the edit in ``scratch`` to ``image`` as its next revision (None: nothing changed)."""
    with ImageReader(image) as reader:
        overlay = Overlay(reader, scratch)
        try:
            reviser = ImageReviser(image)
            for region in reader.regions:
                ranges = overlay.dirty_ranges(region.name)
                if ranges:
                    reviser.replace(
                        region.name, ranges, functools.partial(overlay.read, region.name)
                    )
            return reviser.commit(note)
        finally:
            overlay.close()
