"""Tagged file content: where each 512-byte piece of a file landed, found by searching the image.

Every 512-byte piece of a tagged file starts with a tag naming its file and its index in the
file. After a filesystem tool has written the files, scanning the image for tags gives, for
every sector holding file data, which file and which byte of it: the truth about a file's
placement that owes nothing to any parser (ours or the filesystem's tools). From it,
``expected_hits`` says which byte ranges of which files a given unreadable range of the volume
takes away, which is what ``files_hit`` must answer.
"""

from __future__ import annotations

import os
import random
import struct
from collections import defaultdict
from pathlib import Path

from clonebay.fs import extents
from clonebay.model import Extent

SECTOR = 512
TAG = b"\xa5CLONEBAY-TAG:"
TAG_FIELDS = struct.Struct("<II")  # file number, sector index in the file
READ_PIECE = 8 << 20


def content(number: int, size: int, seed: int = 0) -> bytes:
    """``size`` bytes for file ``number``: each 512-byte piece tagged, the rest random."""
    rng = random.Random(number * 7919 + seed)
    pieces = []
    for index in range(-(-size // SECTOR)):
        head = TAG + TAG_FIELDS.pack(number, index)
        pieces.append(head + rng.randbytes(SECTOR - len(head)))
    return b"".join(pieces)[:size]


def locate(image: Path, offset: int = 0, size: int | None = None) -> dict[int, tuple[int, int]]:
    """Volume byte (a multiple of 512) -> (file number, sector index), for the volume at
    ``offset`` of ``image``; only whole tags at sector starts count."""
    found: dict[int, tuple[int, int]] = {}
    end = offset + (size if size is not None else image.stat().st_size - offset)
    width = len(TAG) + TAG_FIELDS.size
    with open(image, "rb") as f:
        for start in range(offset, end, READ_PIECE):
            piece = os.pread(f.fileno(), min(READ_PIECE, end - start) + width, start)
            at = piece.find(TAG)
            while at >= 0:
                volume = start - offset + at
                if volume % SECTOR == 0 and at < READ_PIECE:
                    found[volume] = TAG_FIELDS.unpack_from(piece, at + len(TAG))
                at = piece.find(TAG, at + 1)
    return found


def expected_hits(
    where: dict[int, tuple[int, int]],
    names: dict[int, str],
    sizes: dict[int, int],
    bad: list[tuple[int, int]],
) -> dict[str, tuple[tuple[int, int], ...]]:
    """path -> the byte ranges of the file that ``bad`` (volume ranges) takes away."""
    lost: dict[str, list[Extent]] = defaultdict(list)
    for start, length in bad:
        sector = start - start % SECTOR
        while sector < start + length:
            if sector in where:
                number, index = where[sector]
                lo, hi = max(start, sector), min(start + length, sector + SECTOR)
                first = index * SECTOR + lo - sector
                last = min(first + hi - lo, sizes[number])
                if last > first:
                    lost[names[number]].append(Extent(first, last - first))
            sector += SECTOR
    return {
        name: tuple((e.start, e.length) for e in extents.normalize(runs))
        for name, runs in lost.items()
    }


def sectors_of(where: dict[int, tuple[int, int]], number: int) -> list[int]:
    """The volume bytes where file ``number``'s sectors lie, in file order."""
    return [
        v
        for v, _ in sorted(
            ((v, i) for v, (n, i) in where.items() if n == number), key=lambda p: p[1]
        )
    ]
