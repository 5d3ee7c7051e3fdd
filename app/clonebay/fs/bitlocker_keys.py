"""Unlocking a BitLocker volume natively: from a password, a recovery password, a .BEK startup key
or a clear key to the opened full-volume key (FVEK).

BitLocker has two levels of keys. The full-volume key encrypts the sectors; it is stored once,
sealed (AES-CCM) with the volume master key (VMK). The VMK is stored once per key protector,
sealed with a key derived from that protector's secret:

- password: UTF-16LE, SHA-256 twice, then the stretch below with the protector's salt;
- recovery password: 48 digits in 8 groups of 6; each group is a multiple of 11 below 720896
  (11 * 65536), and the 8 quotients are the 16-bit little-endian words of a 128-bit key, which is
  hashed once with SHA-256 and stretched;
- startup key: the 256-bit key in a .BEK file, whose key ID is the protector's GUID;
- clear key: stored beside the sealed VMK while protection is suspended.

The stretch hashes an 88-byte record (last hash, initial hash, salt, 64-bit counter) 0x100000
times with SHA-256: about half a second in plain hashlib on this project's machines, which is the
point of it. AES-CCM's 16-byte tag tells a right key from a wrong one, so a wrong key is refused
by name and never turned into garbage. Once the VMK is open it also opens the metadata's sealed
SHA-256 (cryptsetup checks it too): metadata changed outside BitLocker is refused.

Keys in clear live only in VolumeKey and StartupKey, whose reprs print no key bytes; no message
here quotes a password or its digits. Spec: libbde's "BitLocker Drive Encryption (BDE) format",
sections "Keys", "AES-CCM" and "BitLocker External Key (BEK) file"; cryptsetup's
lib/bitlk/bitlk.c (bitlk_kdf, get_recovery_key, get_startup_key, the validation hash).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from clonebay.errors import InputError
from clonebay.fs.bitlocker_entries import (
    ENTRY,
    BitlockerError,
    EntryType,
    Method,
    Sealed,
    ValueType,
    guid_text,
    iter_entries,
    need,
)
from clonebay.fs.bitlocker_meta import METADATA_HEADER, FveMetadata
from clonebay.fs.bitlocker_protectors import KEY_METHOD, Protector, ProtectorKind

STRETCH_ROUNDS = 0x100000
COUNTER = struct.Struct("<Q")
RECOVERY_GROUPS = 8
RECOVERY_LIMIT = 11 << 16  # 720896: a group / 11 must fit 16 bits
VALIDATION_HASH = 0x2005  # the method code of the sealed SHA-256 (cryptsetup: hash_type)
BEK_VERSION = 1
EXTERNAL_KEY_HEADER = 24  # key ID GUID, FILETIME; then properties


class BitlockerKeyError(InputError):
    """A password, recovery password or startup key is malformed, or does not unlock the volume."""

    title = "Key refused"


@dataclass(frozen=True)
class StartupKey:
    """A .BEK file's key: ``guid`` is its key ID (the protector it opens, and the file's name)."""

    guid: str
    volume_guid: str  # the volume the file says it belongs to; "" when it does not say
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class VolumeKey:
    """An opened full-volume key: what decrypts the sectors. ``tweak`` is the Elephant diffuser's
    sector-key key (empty for other methods). No key byte is ever part of the repr."""

    method: Method
    sector_size: int
    protector: str  # "password {GUID}" that opened it
    fvek: bytes = field(repr=False)
    tweak: bytes = field(default=b"", repr=False)


def recovery_key(text: str) -> bytes:
    """The 128-bit key a recovery password stands for; BitlockerKeyError names a wrong group by
    its position (never its digits)."""
    groups = [g for g in re.split(r"[\s-]+", text.strip()) if g]
    if len(groups) != RECOVERY_GROUPS or any(len(g) != 6 or not g.isdigit() for g in groups):
        raise BitlockerKeyError(
            "a recovery password is 48 digits in 8 groups of 6, separated by dashes"
            f" (this one has {len(groups)} groups)"
        )
    words = []
    for number, group in enumerate(groups, start=1):
        value = int(group)
        if value % 11:
            raise BitlockerKeyError(
                f"group {number} of the recovery password is mistyped: every group is a"
                " multiple of 11"
            )
        if value >= RECOVERY_LIMIT:
            raise BitlockerKeyError(
                f"group {number} of the recovery password is mistyped: every group is below"
                f" {RECOVERY_LIMIT}"
            )
        words.append(value // 11)
    return struct.pack("<8H", *words)


def stretch(initial: bytes, salt: bytes) -> bytes:
    """BitLocker's key stretch: SHA-256 of (last, initial, salt, counter), 0x100000 times.

    The record's middle never changes, so the loop only joins three byte strings and hashes;
    one SHA-256 object per round is what hashlib does fastest (``.copy()`` of a prefix cannot
    help: the changing hash comes first)."""
    sha256, pack = hashlib.sha256, COUNTER.pack
    middle = initial + salt
    last = bytes(32)
    for count in range(STRETCH_ROUNDS):
        last = sha256(last + middle + pack(count)).digest()
    return last


def password_key(password: str, salt: bytes) -> bytes:
    once = hashlib.sha256(password.encode("utf-16-le")).digest()
    return stretch(hashlib.sha256(once).digest(), salt)


def recovery_password_key(text: str, salt: bytes) -> bytes:
    return stretch(hashlib.sha256(recovery_key(text)).digest(), salt)


def open_sealed(key: bytes, box: Sealed) -> bytes | None:
    """The plaintext of an AES-CCM sealed key, or None when ``key`` is not the one (tag)."""
    if len(key) not in (16, 24, 32):
        return None
    try:
        return AESCCM(key, tag_length=16).decrypt(box.nonce, box.ciphertext + box.tag, None)
    except InvalidTag:
        return None


def unwrap(plain: bytes, what: str) -> tuple[int, bytes]:
    """(method code, key bytes) of an opened key: a KEY entry (size, type, value, version),
    the 32-bit method, the key."""
    if len(plain) < ENTRY.size + KEY_METHOD.size:
        raise BitlockerError(f"{what}: opened key is only {len(plain)} bytes")
    size, _, value, _ = ENTRY.unpack_from(plain)
    if size != len(plain) or value != ValueType.KEY:
        raise BitlockerError(f"{what}: opened key has size {size}, value type {value}")
    (method,) = KEY_METHOD.unpack_from(plain, ENTRY.size)
    return method & 0xFFFF, plain[ENTRY.size + KEY_METHOD.size :]


def read_startup_key(data: bytes, name: str) -> StartupKey:
    """Parse a .BEK file (a metadata header, then one external-key entry)."""
    if len(data) < METADATA_HEADER.size + ENTRY.size:
        raise BitlockerKeyError(f"{name}: {len(data)} bytes, too short for a BitLocker .BEK file")
    size, version, header, _, guid, _, _, _, _ = METADATA_HEADER.unpack_from(data)
    if version != BEK_VERSION or header != METADATA_HEADER.size or size != len(data):
        raise BitlockerKeyError(
            f"{name}: not a BitLocker .BEK startup key file (header says version {version},"
            f" {size} bytes)"
        )
    for entry in iter_entries(data, header, size, 0, name):
        if entry.kind != EntryType.STARTUP_KEY or entry.value != ValueType.EXTERNAL_KEY:
            continue
        need(entry, EXTERNAL_KEY_HEADER, name)
        key, volume = b"", ""
        base = entry.offset + ENTRY.size
        for prop in iter_entries(entry.data, EXTERNAL_KEY_HEADER, len(entry.data), base, name):
            if prop.value == ValueType.KEY:
                need(prop, KEY_METHOD.size + 32, name)
                key = prop.data[KEY_METHOD.size : KEY_METHOD.size + 32]
            elif prop.value == ValueType.GUID and len(prop.data) >= 16:
                volume = guid_text(prop.data)
        if key:
            return StartupKey(guid_text(entry.data[:16]), volume, key)
    raise BitlockerKeyError(f"{name}: no startup key in this .BEK file (ID {guid_text(guid)})")


def _fvek(meta: FveMetadata, vmk: bytes, protector: Protector) -> VolumeKey:
    """Check the metadata's signed SHA-256 with the VMK, then open the full-volume key."""
    copy = f"FVE metadata copy {meta.copy + 1}"
    if meta.validation is not None:
        plain = open_sealed(vmk, meta.validation)
        if plain is None:
            raise BitlockerError(f"{copy}: its signed SHA-256 does not open with the master key")
        method, digest = unwrap(plain, copy)
        if method == VALIDATION_HASH and digest[:32] != meta.block_sha256:
            raise BitlockerError(f"{copy} was changed outside BitLocker (SHA-256 mismatch)")
    plain = open_sealed(vmk, meta.sealed_fvek)
    if plain is None:
        raise BitlockerError(f"{copy}: the full-volume key does not open with the master key")
    method, key = unwrap(plain, f"{copy}, full-volume key")
    if method != meta.method.code:
        raise BitlockerError(f"{copy}: full-volume key is for method 0x{method:04x}")
    size = meta.method.key_bits // 8
    if meta.method.mode == "xts":
        size *= 2  # two AES keys: data and tweak
    if meta.method.mode == "cbc-elephant":
        # 512 bits whatever the AES size: the CBC key in the first 256, then the tweak key
        # that makes the sector keys (cryptsetup's decrypt_key says the same).
        if len(key) < 64:
            raise BitlockerError(f"{copy}: Elephant key data is {len(key)} bytes, not 64")
        return VolumeKey(meta.method, meta.sector_size, protector.text, key[:size],
                         key[32 : 32 + size])  # fmt: skip
    if len(key) < size:
        raise BitlockerError(f"{copy}: full-volume key is {len(key)} bytes, not {size}")
    return VolumeKey(meta.method, meta.sector_size, protector.text, key[:size])


def _candidates(meta: FveMetadata, kinds: tuple[ProtectorKind, ...], what: str) -> list[Protector]:
    found = [p for p in meta.protectors if p.kind in kinds]
    if not found:
        have = ", ".join(p.text for p in meta.protectors) or "none"
        raise BitlockerKeyError(f"this volume has no {what} protector (its protectors: {have})")
    return found


def unlock(
    meta: FveMetadata,
    *,
    password: str | None = None,
    recovery_password: str | None = None,
    startup_key: StartupKey | None = None,
    clear_key: bool = False,
) -> VolumeKey:
    """Open the full-volume key with exactly one kind of secret; BitlockerKeyError when it is
    malformed or does not unlock this volume, BitlockerError when the metadata is damaged."""
    given = (password, recovery_password, startup_key)
    if sum(x is not None for x in given) + clear_key != 1:
        raise BitlockerKeyError(
            "give exactly one of: password, recovery password, startup key, clear key"
        )
    # Generators: the protectors are found (or refused) at once, each stretch runs only when
    # the protectors before it did not open.
    attempts: Iterable[tuple[Protector, bytes]]
    if password is not None:
        what = "password"
        if not password:
            raise BitlockerKeyError("the password is empty")
        found = _candidates(meta, (ProtectorKind.PASSWORD,), what)
        attempts = ((p, password_key(password, p.salt)) for p in found)
    elif recovery_password is not None:
        what = "recovery password"
        recovery_key(recovery_password)  # a typo is refused before the half-second stretch
        found = _candidates(meta, (ProtectorKind.RECOVERY_PASSWORD,), what)
        attempts = ((p, recovery_password_key(recovery_password, p.salt)) for p in found)
    elif startup_key is not None:
        what = "startup key"
        if startup_key.volume_guid and startup_key.volume_guid != meta.volume_guid:
            raise BitlockerKeyError(
                f"the startup key {{{startup_key.guid}}} belongs to BitLocker volume"
                f" {{{startup_key.volume_guid}}}, not to this one {{{meta.volume_guid}}}"
            )
        kinds = (ProtectorKind.STARTUP_KEY,)  # TPM + startup key needs the TPM's half too
        matching = [p for p in _candidates(meta, kinds, what) if p.guid == startup_key.guid]
        if not matching:
            theirs = ", ".join(p.guid for p in _candidates(meta, kinds, what))
            raise BitlockerKeyError(
                f"the startup key {{{startup_key.guid}}} is not one of this volume's"
                f" (its startup key IDs: {theirs})"
            )
        attempts = [(p, startup_key.key) for p in matching]
    else:
        what = "clear key"
        attempts = [(p, p.clear_key) for p in _candidates(meta, (ProtectorKind.CLEAR_KEY,), what)]
    for protector, key in attempts:
        if protector.sealed_vmk is None:
            continue
        plain = open_sealed(key, protector.sealed_vmk)
        if plain is not None:
            _, vmk = unwrap(plain, f"protector {protector.guid}")
            return _fvek(meta, vmk[:32], protector)
    raise BitlockerKeyError(
        f"the {what} does not unlock this volume (BitLocker volume {{{meta.volume_guid}}})"
    )
