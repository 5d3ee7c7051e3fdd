"""A LUKS volume's header as data: what LUKS1 and LUKS2 headers say, in one model.

LUKS ("Linux Unified Key Setup") puts a header at the start of a partition and the encrypted data
after it. The data is encrypted with one random *volume key* (LUKS1 calls it the master key). The
volume key is stored up to 8 (LUKS1) or 32 (LUKS2) times, once per *key slot*: each copy is
spread over ~4000 "stripes" by the anti-forensic splitter (so that wiping a few sectors destroys
it) and encrypted with a key derived from a passphrase or key file by a slow KDF (PBKDF2, or
Argon2 in LUKS2). A *digest* of the volume key (PBKDF2 of it) tells a right key from a wrong one.

- LUKS1: one 592-byte big-endian binary header (cipher, hash, payload offset, digest, 8 slots).
- LUKS2: two copies of a binary header, each followed by a JSON area (keyslots, segments,
  digests, tokens, config), both protected by a checksum; the keyslot areas follow the two copies.

Both are read into ``LuksHeader``: keyslots, data segments and digests with byte offsets and
sizes, so the key code and the unlocked view do not care which version they read. Nothing here is
secret (salts and digests are public); the volume key lives only in luks_keys.VolumeKey.

Spec: "LUKS On-Disk Format Specification" version 1.2.3 (LUKS1) and "LUKS2 On-Disk Format
Specification" version 1.1.x (both in cryptsetup's docs/), and cryptsetup's lib/luks1 and
lib/luks2.
"""

from __future__ import annotations

from dataclasses import dataclass

from clonebay.model import Extent

SECTOR = 512  # LUKS offsets and keyslot areas count 512-byte sectors whatever the disk's
PRIORITY_IGNORE, PRIORITY_NORMAL, PRIORITY_HIGH = 0, 1, 2


@dataclass(frozen=True)
class Kdf:
    """How a passphrase becomes a keyslot key: PBKDF2 (``hash``, ``iterations``) or Argon2i/id
    (``iterations`` passes over ``memory`` KiB in ``cpus`` lanes)."""

    kind: str  # "pbkdf2", "argon2i", "argon2id"
    salt: bytes
    hash: str = ""
    iterations: int = 0
    memory: int = 0
    cpus: int = 0

    @property
    def text(self) -> str:
        if self.kind == "pbkdf2":
            return f"pbkdf2-{self.hash}, {self.iterations} iterations"
        return f"{self.kind}, {self.iterations} passes over {self.memory} KiB, {self.cpus} lanes"


@dataclass(frozen=True)
class Keyslot:
    """One active key slot: the volume key (``key_size`` bytes) split into ``stripes`` by the
    AF splitter with ``af_hash``, encrypted with ``cipher`` (``area_key_size``-byte key, 512-byte
    sectors, IVs from 0) in ``area`` (volume offsets)."""

    number: int
    key_size: int
    kdf: Kdf
    stripes: int
    af_hash: str
    area: Extent
    cipher: str
    area_key_size: int
    priority: int = PRIORITY_NORMAL

    @property
    def material(self) -> int:
        """Bytes of the split key: the start of ``area`` holds them."""
        return self.key_size * self.stripes


@dataclass(frozen=True)
class Digest:
    """PBKDF2(``hash``, volume key, ``salt``, ``iterations``) equals ``value`` for the key of
    ``keyslots`` that encrypts ``segments``."""

    keyslots: tuple[int, ...]
    segments: tuple[int, ...]
    hash: str
    iterations: int
    salt: bytes
    value: bytes


@dataclass(frozen=True)
class Segment:
    """Where the encrypted data is: bytes from ``offset`` on (``size`` bytes, or to the end of the
    device when None), ``cipher`` over ``sector_size``-byte sectors whose IVs start at
    ``iv_tweak`` (counted in 512-byte sectors)."""

    number: int
    kind: str  # "crypt"; "linear" while a reencryption runs
    offset: int
    size: int | None
    cipher: str
    sector_size: int = SECTOR
    iv_tweak: int = 0
    integrity: str = ""  # the dm-integrity algorithm of an authenticated segment
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LuksHeader:
    """A LUKS header as read; ``keyslots`` holds the active slots only. ``areas_end`` is where
    the header copies and keyslot areas end (the data may start later, never earlier)."""

    version: int
    uuid: str
    keyslots: tuple[Keyslot, ...]
    segments: tuple[Segment, ...]
    digests: tuple[Digest, ...]
    areas_end: int
    label: str = ""
    subsystem: str = ""
    requirements: tuple[str, ...] = ()  # LUKS2 config.requirements.mandatory
    reencrypt_slots: tuple[int, ...] = ()  # LUKS2 keyslots of type "reencrypt"
    tokens: tuple[str, ...] = ()  # LUKS2 token types ("systemd-tpm2", ...)
    copy_note: str = ""  # which LUKS2 header copy was used, when not both agree

    @property
    def cipher(self) -> str:
        return self.segments[0].cipher if self.segments else ""

    @property
    def key_bits(self) -> int:
        return self.keyslots[0].key_size * 8 if self.keyslots else 0

    @property
    def data_offset(self) -> int:
        return self.segments[0].offset if self.segments else 0

    def notes(self) -> tuple[str, ...]:
        """What a technician sees of the volume without any key."""
        sector = self.segments[0].sector_size if self.segments else SECTOR
        bits = f"{self.key_bits}-bit key, " if self.key_bits else ""
        lines = [
            f"LUKS{self.version}, {self.cipher or 'no data segment'} ({bits}{sector}-byte"
            f" sectors), data at {self.data_offset}",
            f"LUKS UUID {self.uuid}" + (f", label {self.label!r}" if self.label else ""),
        ]
        slots = ", ".join(f"{s.number} ({s.kdf.kind})" for s in self.keyslots) or "none"
        lines.append(f"active key slots: {slots}")
        if self.tokens:
            lines.append(f"tokens: {', '.join(self.tokens)}")
        if self.copy_note:
            lines.append(self.copy_note)
        return tuple(lines)
