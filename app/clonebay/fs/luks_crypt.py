"""Decrypting LUKS sectors: the dm-crypt cipher specs LUKS volumes use, done with OpenSSL.

A dm-crypt spec is "cipher-chainmode-ivmode[:ivopts]", e.g. "aes-xts-plain64". Every sector is
encrypted on its own with an IV made from its sector number:

- plain64: the sector number as a 64-bit little-endian integer, zero-padded to the block size;
- plain: the same, truncated to 32 bits (volumes made before 2.6.33, over 2 TiB wrap around);
- essiv:HASH: AES-ECB of the plain64 IV under HASH(volume key) ("encrypted salt-sector IV").

XTS takes the IV as its tweak and a key of two AES keys (data, tweak); CBC takes it as its IV.
Those five are what LUKS has written by default since 2006 (aes-cbc-essiv:sha256 for LUKS1 up
to cryptsetup 1.6, aes-xts-plain64 since). Other ciphers (serpent, twofish, adiantum, "capi:"
specs) are refused with their name: the volume is then copied whole, still encrypted.

Sector numbers are given by the caller, and count 512-byte units whatever the encryption sector
size (a 4096-byte sector's IV is its offset / 512, as dm-crypt does without
``iv_large_sectors``, which cryptsetup never sets for LUKS): see luks_view.
One OpenSSL context per sector: ~80 MiB/s for 512-byte sectors here, more for 4096-byte ones;
only the inner filesystem's metadata is decrypted while probing, so that is plenty.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from clonebay.errors import LuksError

AES_BLOCK = 16
IV_UNIT = 512  # IV numbers count 512-byte units, whatever the sector size
CHAINS = ("xts", "cbc")
IV_MODES = ("plain64", "plain", "essiv:sha256")


def parse_spec(spec: str) -> tuple[str, str]:
    """(chain mode, IV mode) of a supported dm-crypt ``spec``; LuksError names any other."""
    cipher, _, rest = spec.partition("-")
    chain, _, iv_mode = rest.partition("-")
    if cipher != "aes" or chain not in CHAINS or iv_mode not in IV_MODES:
        raise LuksError(
            f"cipher {spec!r} is not supported (only aes with xts or cbc and"
            f" {', '.join(IV_MODES)} IVs)"
        )
    return chain, iv_mode


def check_key_size(spec: str, key_size: int) -> tuple[str, str]:
    """``parse_spec``, and LuksError when a key of ``key_size`` bytes does not fit it."""
    chain, iv_mode = parse_spec(spec)
    sizes = (32, 64) if chain == "xts" else (16, 24, 32)  # XTS: two AES-128 or AES-256 keys
    if key_size not in sizes:
        raise LuksError(f"cipher {spec!r} with a {key_size * 8}-bit key is not supported")
    return chain, iv_mode


class SectorCipher:
    """Decrypts whole ``sector_size``-byte sectors of a dm-crypt ``spec`` with ``key``."""

    def __init__(self, spec: str, key: bytes, sector_size: int) -> None:
        chain, iv_mode = check_key_size(spec, len(key))
        if sector_size % IV_UNIT or sector_size <= 0:
            raise LuksError(f"cipher {spec!r}: sector size {sector_size}")
        self.spec = spec
        self.sector_size = sector_size
        self._step = sector_size // IV_UNIT
        self._chain = chain
        self._iv_mode = iv_mode
        self._aes = algorithms.AES(key)
        try:
            Cipher(self._aes, modes.XTS(bytes(AES_BLOCK)) if chain == "xts" else modes.ECB())
        except ValueError as exc:  # XTS refuses a key whose two halves are equal
            raise LuksError(f"cipher {spec!r}: {exc}") from exc
        self._essiv = None
        if iv_mode.startswith("essiv:"):
            salt = hashlib.sha256(key).digest()
            self._essiv = Cipher(algorithms.AES(salt), modes.ECB())

    def __repr__(self) -> str:
        return f"SectorCipher({self.spec!r}, sector_size={self.sector_size})"

    def _ivs(self, first: int, count: int) -> bytes:
        """The IVs of ``count`` sectors from IV number ``first`` on, 16 bytes each."""
        mask = 0xFFFFFFFF if self._iv_mode == "plain" else (1 << 64) - 1
        numbers = range(first, first + count * self._step, self._step)
        plain = b"".join((n & mask).to_bytes(AES_BLOCK, "little") for n in numbers)
        if self._essiv is None:
            return plain
        return self._essiv.encryptor().update(plain)  # all the sectors' IVs in one call

    def decrypt(self, first_iv: int, data: bytes) -> bytes:
        """The plaintext of ``data``, whole sectors, the first one's IV number ``first_iv`` (its
        offset / 512 from the segment's start, plus ``iv_tweak``)."""
        size = self.sector_size
        if len(data) % size:
            raise LuksError(f"decrypt {len(data)} bytes: not whole {size}-byte sectors")
        count = len(data) // size
        ivs = self._ivs(first_iv, count)
        view, out = memoryview(data), bytearray(len(data))
        for k in range(count):
            iv = ivs[AES_BLOCK * k : AES_BLOCK * (k + 1)]
            mode = modes.XTS(iv) if self._chain == "xts" else modes.CBC(iv)
            part = Cipher(self._aes, mode).decryptor()
            out[k * size : (k + 1) * size] = part.update(view[k * size : (k + 1) * size])
        return bytes(out)
