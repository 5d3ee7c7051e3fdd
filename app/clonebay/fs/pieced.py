"""A volume stored as pieces of another one: an LVM logical volume in its physical extents, or the
data area of an md RAID1 member. Reads are read-only and go straight to the outer volume."""

from __future__ import annotations

from dataclasses import dataclass

from clonebay.errors import InputError
from clonebay.system.blockdev import ByteSource


@dataclass(frozen=True)
class Piece:
    """Inner bytes ``[inner, inner + length)`` are outer bytes from ``outer``."""

    inner: int
    outer: int
    length: int


class PiecedSource:
    """A ByteSource whose bytes are ``pieces`` of ``src``, sorted by inner offset, gapless."""

    def __init__(self, src: ByteSource, pieces: tuple[Piece, ...], name: str) -> None:
        self._src = src
        self._pieces = tuple(sorted(pieces, key=lambda p: p.inner))
        self._name = name
        self._size = sum(p.length for p in self._pieces)

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return self._name

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise InputError(
                f"{self._name}: read of {length} bytes at offset {offset} is past the end"
                f" ({self._size} bytes)"
            )
        out = bytearray()
        for piece in self._pieces:
            start = max(offset, piece.inner)
            end = min(offset + length, piece.inner + piece.length)
            if start < end:
                out += self._src.pread(end - start, piece.outer + start - piece.inner)
        return bytes(out)
