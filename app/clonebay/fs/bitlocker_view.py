"""An unlocked BitLocker volume, read-only: the plaintext NTFS (or FAT) that Windows shows.

The view is the same layout cryptsetup builds with device-mapper ("dm-crypt" and "dm-zero"
segments) and dislocker builds in its FUSE file, done in-process:

- bytes [0, header_size) come from the relocated boot-sector area, decrypted at the offset where
  they are stored, so byte 0 of the view is the real boot sector;
- the three 64 KiB FVE metadata areas and the relocated area itself read as zeros;
- bytes past the encrypted size (a volume whose conversion stopped) are passed through;
- everything else is decrypted in place.

It is a ByteSource (size, name, ``pread(length, offset)``), so fs/ parsers can read the plaintext
the way they read any partition, plus ``read(offset, length)``. It never writes. Volumes that
BitLocker is still converting (encrypt-on-write, or a state other than "encrypted") are refused,
as cryptsetup refuses to activate them: part of them is not encrypted, and which part is kept in
structures not parsed here.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass

from clonebay.errors import InputError
from clonebay.fs.bitlocker_crypt import SectorDecryptor, sector_decryptor
from clonebay.fs.bitlocker_entries import BitlockerError
from clonebay.fs.bitlocker_keys import VolumeKey
from clonebay.fs.bitlocker_meta import AREA, STATE_ENCRYPTED, FveMetadata
from clonebay.system.blockdev import ByteSource

BATCH = 1 << 20  # bytes decrypted per call: bounds memory, and the diffuser's lanes (1 MiB)


class Kind(enum.Enum):
    ZERO = "zero"
    CRYPT = "crypt"
    PLAIN = "plain"


@dataclass(frozen=True)
class Segment:
    """View bytes [start, end) come from ``stored`` onwards in the volume, as ``kind`` says."""

    start: int
    end: int
    kind: Kind
    stored: int


def segments(meta: FveMetadata, size: int) -> tuple[Segment, ...]:
    """The view's layout over a ``size``-byte volume, sorted, gapless, merged."""
    sector = meta.sector_size
    areas = [(o, AREA) for o in meta.block_offsets] + [(meta.header_offset, meta.header_size)]
    zeros = [(min(o, size), min(o + n, size)) for o, n in areas]  # copies past a cut-short end
    encrypted = min(meta.encrypted_size, size)
    cuts = {0, size, meta.header_size, encrypted, *(p for z in zeros for p in z)}
    for point in cuts:
        if point % sector or not 0 <= point <= size:
            raise BitlockerError(
                f"BitLocker layout boundary {point} is not a whole {sector}-byte sector"
                f" inside the {size}-byte volume"
            )
    points = sorted(cuts)
    out: list[Segment] = []
    for start, end in itertools.pairwise(points):
        if start < meta.header_size:
            piece = Segment(start, end, Kind.CRYPT, meta.header_offset + start)
        elif any(a <= start < b for a, b in zeros):
            piece = Segment(start, end, Kind.ZERO, start)
        elif start >= encrypted:
            piece = Segment(start, end, Kind.PLAIN, start)
        else:
            piece = Segment(start, end, Kind.CRYPT, start)
        last = out[-1] if out else None
        if last and last.kind is piece.kind and last.stored + last.end - last.start == piece.stored:
            out[-1] = Segment(last.start, piece.end, last.kind, last.stored)
        else:
            out.append(piece)
    return tuple(out)


class UnlockedVolume:
    """The plaintext of BitLocker volume ``src``, opened with ``key`` (see bitlocker_keys)."""

    def __init__(self, src: ByteSource, meta: FveMetadata, key: VolumeKey) -> None:
        if meta.encrypt_on_write:
            raise BitlockerError(
                f'{src.name}: BitLocker is still encrypting this volume on write ("used space'
                ' only" not finished); its unconverted areas are not readable here'
            )
        if (meta.state, meta.next_state) != (STATE_ENCRYPTED, STATE_ENCRYPTED):
            raise BitlockerError(
                f"{src.name}: BitLocker is converting this volume (state {meta.state}, next"
                f" {meta.next_state}); let Windows finish or pause it as encrypted first"
            )
        self._src = src
        self._decryptor: SectorDecryptor = sector_decryptor(key)
        self._segments = segments(meta, src.size)
        self._sector = meta.sector_size

    def __repr__(self) -> str:
        return f"UnlockedVolume({self._src.name!r}, {len(self._segments)} segments)"

    @property
    def size(self) -> int:
        return self._src.size

    @property
    def name(self) -> str:
        return f"{self._src.name} (unlocked BitLocker)"

    def read(self, offset: int, length: int) -> bytes:
        return self.pread(length, offset)

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InputError(
                f"{self.name}: read of {length} bytes at offset {offset} is past the end"
                f" ({self.size} bytes)"
            )
        start = offset - offset % self._sector
        end = -(-(offset + length) // self._sector) * self._sector
        parts = [self._segment_bytes(seg, start, end) for seg in self._segments
                 if seg.start < end and start < seg.end]  # fmt: skip
        data = b"".join(parts)
        return data[offset - start : offset - start + length]

    def _segment_bytes(self, seg: Segment, start: int, end: int) -> bytes:
        lo, hi = max(seg.start, start), min(seg.end, end)
        if seg.kind is Kind.ZERO:
            return bytes(hi - lo)
        stored = seg.stored + (lo - seg.start)
        if seg.kind is Kind.PLAIN:
            return self._src.pread(hi - lo, stored)
        pieces = []
        for at in range(0, hi - lo, BATCH):
            n = min(BATCH, hi - lo - at)
            pieces.append(self._decryptor.decrypt(stored + at, self._src.pread(n, stored + at)))
        return b"".join(pieces)
