"""What the later rescue passes read, kept until it is added to the image.

Passes 2-5 read the areas pass 1 left, in any order (backward, edges first), after the image's
regions were written in order. Their bytes go into a sparse scratch file beside the image, at
their source positions, and the ranges are remembered; at the end they become one new revision
of the image (imaging/revise.py), replacing parts of its UNREADABLE records with frames. A
crash before that leaves the image as pass 1 wrote it, and the map says what was read.
"""

from __future__ import annotations

import os
from pathlib import Path

from clonebay.imaging.revise import merge_ranges


class Recovered:
    """A sparse scratch file of recovered bytes at their source positions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._ranges: list[tuple[int, int]] = []

    def put(self, pos: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], pos + done)
        self._ranges.append((pos, pos + len(data)))

    def ranges(self) -> list[tuple[int, int]]:
        """(start, end) source positions recovered, merged."""
        self._ranges = merge_ranges(self._ranges)
        return list(self._ranges)

    def read(self, pos: int, length: int) -> bytes:
        data = os.pread(self.fd, length, pos)
        return data + bytes(length - len(data))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.path.unlink(missing_ok=True)
