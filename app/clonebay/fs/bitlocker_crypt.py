"""Decrypting BitLocker sectors with an opened full-volume key.

Every sector is encrypted on its own, keyed by where it sits: ``sector_offset`` is the byte
offset of the sector from the start of the volume (where it is stored, which for the relocated
boot sectors is not where the unlocked view shows them). The sector size is the volume's (its
boot sector's bytes per sector: 512, or 4096 on 4Kn disks).

- AES-XTS (Windows 10 1511 and later): XTS with the sector number (offset / sector size) as the
  128-bit little-endian tweak; the key is the XTS key pair (data key, tweak key).
- AES-CBC: CBC with IV = AES-ECB(FVEK, sector offset as a 128-bit little-endian number).
- AES-CBC + Elephant diffuser (Vista, 7): CBC as above, then the diffuser undone, then the
  sector key XORed: AES-ECB(tweak key, offset) and AES-ECB(tweak key, offset with byte 15 set
  to 0x80), 32 bytes repeated over the sector (bitlocker_diffuser).

Spec: libbde's "BitLocker Drive Encryption (BDE) format", section "Encryption methods"; the
Linux kernel's dm-crypt (eboiv and elephant IVs) and cryptsetup's lib/bitlk/bitlk.c.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from clonebay.fs.bitlocker_diffuser import undiffuse
from clonebay.fs.bitlocker_entries import BitlockerError
from clonebay.fs.bitlocker_keys import VolumeKey

TWEAK_HIGH = 0x80 << 120  # byte 15 of the second sector-key block (Elephant)


class SectorDecryptor(Protocol):
    """Decrypts whole sectors stored at ``sector_offset`` (bytes from the volume's start)."""

    sector_size: int

    def decrypt(self, sector_offset: int, data: bytes) -> bytes: ...


def _sectors(sector_size: int, sector_offset: int, data: bytes) -> int:
    if sector_offset % sector_size or len(data) % sector_size:
        raise BitlockerError(
            f"decrypt {len(data)} bytes at offset {sector_offset}: not whole"
            f" {sector_size}-byte sectors"
        )
    return len(data) // sector_size


class XtsDecryptor:
    """AES-XTS; one cipher context per sector (its tweak), ~100 MB/s with OpenSSL's AES-NI."""

    def __init__(self, key: VolumeKey) -> None:
        self.sector_size = key.sector_size
        self._aes = algorithms.AES(key.fvek)

    def __repr__(self) -> str:
        return f"XtsDecryptor(sector_size={self.sector_size})"

    def decrypt(self, sector_offset: int, data: bytes) -> bytes:
        size = self.sector_size
        count = _sectors(size, sector_offset, data)
        first = sector_offset // size
        view, out = memoryview(data), bytearray(len(data))
        for k in range(count):
            tweak = (first + k).to_bytes(16, "little")
            part = Cipher(self._aes, modes.XTS(tweak)).decryptor()
            out[k * size : (k + 1) * size] = part.update(view[k * size : (k + 1) * size])
        return bytes(out)


class CbcDecryptor:
    """AES-CBC with BitLocker's encrypted-offset IV (dm-crypt's "eboiv")."""

    def __init__(self, key: VolumeKey) -> None:
        self.sector_size = key.sector_size
        self._aes = algorithms.AES(key.fvek)
        self._ecb = Cipher(self._aes, modes.ECB())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sector_size={self.sector_size})"

    def _cbc(self, sector_offset: int, data: bytes) -> bytes:
        size = self.sector_size
        count = _sectors(size, sector_offset, data)
        offsets = b"".join((sector_offset + k * size).to_bytes(16, "little") for k in range(count))
        ivs = self._ecb.encryptor().update(offsets)  # all the sectors' IVs in one call
        view, out = memoryview(data), bytearray(len(data))
        for k in range(count):
            part = Cipher(self._aes, modes.CBC(ivs[16 * k : 16 * k + 16])).decryptor()
            out[k * size : (k + 1) * size] = part.update(view[k * size : (k + 1) * size])
        return bytes(out)

    def decrypt(self, sector_offset: int, data: bytes) -> bytes:
        return self._cbc(sector_offset, data)


class ElephantDecryptor(CbcDecryptor):
    """AES-CBC, then the Elephant diffuser undone and the per-sector key removed."""

    def __init__(self, key: VolumeKey) -> None:
        super().__init__(key)
        self._tweak_ecb = Cipher(algorithms.AES(key.tweak), modes.ECB())

    def decrypt(self, sector_offset: int, data: bytes) -> bytes:
        plain = self._cbc(sector_offset, data)
        size = self.sector_size
        blocks = []
        for k in range(len(data) // size):
            offset = sector_offset + k * size
            blocks.append(offset.to_bytes(16, "little"))
            blocks.append((offset | TWEAK_HIGH).to_bytes(16, "little"))
        keys = self._tweak_ecb.encryptor().update(b"".join(blocks))  # 32 bytes per sector
        return undiffuse(plain, keys, size)


def sector_decryptor(key: VolumeKey) -> SectorDecryptor:
    """The decryptor for ``key``'s method."""
    if key.method.mode == "xts":
        return XtsDecryptor(key)
    if key.method.mode == "cbc-elephant":
        return ElephantDecryptor(key)
    return CbcDecryptor(key)
