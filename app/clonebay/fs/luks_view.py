"""An unlocked LUKS volume, read-only: the plaintext that ``cryptsetup open`` would show.

cryptsetup maps one dm-crypt target over the data segment: view byte 0 is volume byte
``offset``, the view ends where the segment does ("dynamic": the end of the device, cut to whole
encryption sectors). The encryption sector at view offset ``x`` (512 to 4096 bytes, LUKS2's
``sector_size``) is decrypted with IV number ``x / 512 + iv_tweak``: dm-crypt counts IVs in
512-byte units unless told ``iv_large_sectors``, which cryptsetup sets only for plain mode
(checked here on a 4096-byte-sector volume that cryptsetup encrypted: the IV at 1 MiB is 2048).

It is a ByteSource (size, name, ``pread(length, offset)``), so fs/ parsers read the plaintext the
way they read any partition, plus ``read(offset, length)``. It never writes.

Only a volume in a settled state is opened (``readable``), as a technician expects of a copy
that stays encrypted and must open again with the same passphrases:

- one "crypt" segment, no reencryption keyslot or requirement (while cryptsetup reencrypts,
  part of the volume is under the old key or in clear, and the boundary lives in a keyslot);
- no dm-integrity (authenticated sectors hold tags this view does not check or strip);
- data after the header: a segment starting at 0 belongs to a *detached* header, whose data is
  on another device; one starting inside the keyslot areas is damage.
"""

from __future__ import annotations

from clonebay.errors import InputError, LuksError
from clonebay.fs.luks_crypt import SectorCipher, parse_spec
from clonebay.fs.luks_keys import VolumeKey
from clonebay.fs.luks_meta import SECTOR, LuksHeader, Segment
from clonebay.system.blockdev import ByteSource

BATCH = 1 << 20  # bytes decrypted per call: bounds memory (a multiple of every sector size)


def readable(header: LuksHeader, volume_size: int, name: str) -> tuple[Segment, int]:
    """The data segment and the size of its plaintext, or LuksError saying why this volume is
    not read here (its copy is then whole)."""
    moving = [r for r in header.requirements if "reencrypt" in r]
    if moving or header.reencrypt_slots:
        raise LuksError(
            f"{name}: a LUKS2 reencryption is in progress (requirement"
            f" {', '.join(moving) or 'reencrypt keyslot'}); finish it with cryptsetup first"
        )
    if header.requirements:
        raise LuksError(f"{name}: LUKS2 requirements {list(header.requirements)} not understood")
    if len(header.segments) != 1:
        raise LuksError(
            f"{name}: the LUKS header has {len(header.segments)} data segments (one is read"
            " here; more mean an interrupted reencryption)"
        )
    segment = header.segments[0]
    if segment.kind != "crypt" or segment.flags:
        raise LuksError(
            f"{name}: the data segment is of type {segment.kind!r}, flags {list(segment.flags)}"
            " (a reencryption in progress?)"
        )
    if segment.integrity:
        raise LuksError(
            f"{name}: the data segment is authenticated with dm-integrity ({segment.integrity});"
            " its sectors carry tags this reader does not handle"
        )
    try:
        parse_spec(segment.cipher)
    except LuksError as exc:
        raise LuksError(f"{name}: {exc.message}") from exc
    if segment.offset == 0:
        raise LuksError(
            f"{name}: a detached LUKS header (its data segment starts at 0): the encrypted data"
            " is on another device"
        )
    if segment.offset < header.areas_end:
        raise LuksError(
            f"{name}: the data segment at {segment.offset} starts inside the LUKS header"
            f" and keyslot areas (which end at {header.areas_end})"
        )
    end = volume_size if segment.size is None else segment.offset + segment.size
    size = (min(end, volume_size) - segment.offset) // segment.sector_size * segment.sector_size
    if size <= 0 or end > volume_size:
        raise LuksError(
            f"{name}: the data segment ({segment.offset} + {segment.size} bytes) does not fit"
            f" the {volume_size}-byte volume"
        )
    return segment, size


class UnlockedLuks:
    """The plaintext of LUKS volume ``src`` opened with ``key`` (see luks_keys.unlock)."""

    def __init__(self, src: ByteSource, header: LuksHeader, key: VolumeKey) -> None:
        segment, size = readable(header, src.size, src.name)
        try:
            self._cipher = SectorCipher(segment.cipher, key.key, segment.sector_size)
        except LuksError as exc:
            raise LuksError(f"{src.name}: {exc.message}") from exc
        self._src = src
        self._segment = segment
        self._size = size

    def __repr__(self) -> str:
        return f"UnlockedLuks({self._src.name!r}, {self._cipher!r})"

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return f"{self._src.name} (unlocked LUKS)"

    @property
    def segment(self) -> Segment:
        return self._segment

    def read(self, offset: int, length: int) -> bytes:
        return self.pread(length, offset)

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise InputError(
                f"{self.name}: read of {length} bytes at offset {offset} is past the end"
                f" ({self._size} bytes)"
            )
        sector = self._segment.sector_size
        start = offset - offset % sector
        end = -(-(offset + length) // sector) * sector
        pieces = []
        for at in range(start, end, BATCH):
            n = min(BATCH, end - at)
            stored = self._src.pread(n, self._segment.offset + at)
            first = at // SECTOR + self._segment.iv_tweak
            pieces.append(self._cipher.decrypt(first, stored))
        data = b"".join(pieces)
        return data[offset - start : offset - start + length]
