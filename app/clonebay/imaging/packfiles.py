"""Pack files being written: frames appended to numbered packs, a new pack when one is full.

A new image (imaging/writer.py) writes packs from number 0; an edited image (imaging/revise.py)
writes its new frames to packs numbered after the image's last one and never touches the old
ones. Both write a pack the same way (docs/format.md §3): the pack header, then frames (frame
header + payload) until the next frame would pass the pack size limit, then fsync and a
``PackEntry`` (name, size, frames) for the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

from clonebay.imaging import spec
from clonebay.imaging.codec import Buffer
from clonebay.imaging.imagedir import os_call, write_all
from clonebay.imaging.manifest import PackEntry


class PackAppender:
    """Frames appended to pack files numbered from ``first`` in ``image``/packs."""

    def __init__(self, image: Path, first: int, limit: int, image_id: bytes) -> None:
        self.image, self.limit, self.image_id = image, limit, image_id
        self.first = first
        self.packs: list[PackEntry] = []  # the packs closed so far, in order
        self._fd: int | None = None
        self._pos = 0
        self._frames = 0

    @property
    def current(self) -> int:
        """The number of the pack being written (or of the next one)."""
        return self.first + len(self.packs)

    def path(self, number: int) -> Path:
        return self.image / spec.PACKS_DIR / spec.pack_name(number)

    def append(self, codec: int, raw_len: int, payload: Buffer, digest: bytes) -> tuple[int, int]:
        """Write one frame; (pack number, offset of its frame header in the pack)."""
        size = spec.FRAME_HEADER.size + len(payload)
        if self._fd is None or self._pos + size > self.limit:
            self._next()
        assert self._fd is not None
        number, offset = self.current, self._pos
        header = spec.pack_frame_header(codec, raw_len, len(payload), digest)
        write_all(self._fd, [header, payload], self.path(number))
        self._pos += size
        self._frames += 1
        return number, offset

    def _next(self) -> None:
        self.close()
        path = self.path(self.current)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        self._fd = os_call(path, os.open, path, flags, 0o644)
        write_all(self._fd, [spec.pack_pack_header(self.current, self.image_id)], path)
        self._pos, self._frames = spec.PACK_HEADER.size, 0

    def close(self) -> None:
        """Flush and close the pack being written, if any, and list it in ``packs``."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        path = self.path(self.current)
        try:
            os_call(path, os.fsync, fd)
        finally:
            os.close(fd)
        self.packs.append(PackEntry(path.name, self._pos, self._frames))

    def abort(self) -> None:
        """Close the pack being written without listing it (the caller removes the files)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
