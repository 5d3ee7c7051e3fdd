"""Opening a LUKS volume key from a passphrase or key file, as cryptsetup does, in-process.

For each active key slot (high priority first, "ignore" slots never, as cryptsetup without
``--key-slot``):

1. the KDF turns the secret into the slot's key: PBKDF2 (hashlib) with the slot's hash, salt and
   iterations, or Argon2i/Argon2id (argon2-cffi's ``hash_secret_raw``, version 0x13) with its
   passes, memory (KiB) and lanes; a key file's bytes are the secret as they are;
2. the slot's area, ``key_size * stripes`` bytes rounded up to whole 512-byte sectors, is
   decrypted with that key and the area's cipher, sector numbers from 0 (luks_crypt);
3. the anti-forensic merge folds the stripes into one key: d = 0; for every stripe but the
   last, d = H(d XOR stripe), where H hashes each digest-sized piece i of the block as
   hash(be32(i) || piece) cut to the piece's length; the key is d XOR the last stripe;
4. the digest decides: PBKDF2 of the candidate key with the digest's hash, salt and iterations
   must equal the stored digest (LUKS1: the header's 20-byte mk-digest; LUKS2: a "pbkdf2"
   digest naming this slot and the data segment). A wrong secret gives a random candidate
   that fails here: it is refused, never used.

KDF parameters come from the header, which anyone can write, so they are bounded before any
work: a slot asking for more than the limits below is refused by name instead of running for
hours or swapping the live system to death. The limits sit far above what cryptsetup picks (2 s
on the machine that formatted the volume: ~6.6 million PBKDF2-SHA256 iterations, or 4 passes of
at most 1 GiB of Argon2, on this project's machines), and the memory one is cryptsetup's own.

The opened key lives only in VolumeKey, whose repr prints no key byte; messages name the slot and
"passphrase N" or "key file N", never a secret.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw

from clonebay.errors import InputError, LuksError, LuksKeyError
from clonebay.fs.luks_crypt import SectorCipher, check_key_size
from clonebay.fs.luks_meta import PRIORITY_IGNORE, SECTOR, Digest, Kdf, Keyslot, LuksHeader
from clonebay.system.blockdev import ByteSource

# PBKDF2 work as iterations x output blocks (a 64-byte key from SHA-256 is 2 blocks): 2**26,
# ~20 s of SHA-256 here (3.3 million blocks a second), ~45 s of SHA-1 (1.5 million).
MAX_PBKDF2_WORK = 1 << 26
MAX_ARGON2_MEMORY = 4 << 20  # KiB: 4 GiB, cryptsetup's own maximum
# Argon2 work as passes x KiB: 32 GiB-passes, ~30 s at the ~1 GiB a second measured here.
MAX_ARGON2_WORK = 32 << 20
MAX_ARGON2_LANES = 64
# cryptsetup always splits into 4000 stripes; more only bounds what a forged slot makes us read.
MAX_STRIPES = 1 << 16
ARGON2 = {"argon2i": Type.I, "argon2id": Type.ID}
ARGON2_VERSION = 0x13


@dataclass(frozen=True)
class VolumeKey:
    """An opened LUKS volume key and the slot that opened it; the key is never in the repr."""

    slot: int
    key: bytes = field(repr=False)


def hash_name(name: str, where: str) -> str:
    """hashlib's name for a LUKS hash spec ("sha256", "sha3-256"); LuksError when absent."""
    wanted = name.lower().replace("-", "_")
    try:
        hashlib.new(wanted)
    except ValueError as exc:
        raise LuksError(f"{where}: hash {name!r} is not available") from exc
    return wanted


def check_kdf(kdf: Kdf, length: int, where: str) -> None:
    """Refuse KDF parameters that are malformed or would take unbounded time or memory to make
    a ``length``-byte key."""
    if kdf.kind == "pbkdf2":
        blocks = -(-length // hashlib.new(hash_name(kdf.hash, where)).digest_size)
        if not 0 < kdf.iterations * blocks <= MAX_PBKDF2_WORK:
            raise LuksError(
                f"{where}: PBKDF2 with {kdf.iterations} iterations for a {length}-byte key"
                f" (the limit is {MAX_PBKDF2_WORK} hash blocks): refused, the header may be"
                " forged"
            )
        return
    if kdf.kind not in ARGON2:
        raise LuksError(f"{where}: KDF {kdf.kind!r} is not supported")
    if not 0 < kdf.cpus <= MAX_ARGON2_LANES or kdf.memory < 8 * kdf.cpus or kdf.iterations < 1:
        raise LuksError(
            f"{where}: {kdf.kind} with {kdf.cpus} lanes, {kdf.memory} KiB, {kdf.iterations}"
            " passes is not a valid Argon2 setting"
        )
    if kdf.memory > MAX_ARGON2_MEMORY or kdf.memory * kdf.iterations > MAX_ARGON2_WORK:
        raise LuksError(
            f"{where}: {kdf.kind} asks for {kdf.memory} KiB and {kdf.iterations} passes (the"
            f" limits are {MAX_ARGON2_MEMORY} KiB and {MAX_ARGON2_WORK} KiB-passes): refused,"
            " the header may be forged"
        )


def derive(kdf: Kdf, secret: bytes, length: int, where: str) -> bytes:
    """The ``length``-byte key ``kdf`` makes of ``secret`` (parameters checked first)."""
    check_kdf(kdf, length, where)
    if kdf.kind == "pbkdf2":
        return hashlib.pbkdf2_hmac(hash_name(kdf.hash, where), secret, kdf.salt, kdf.iterations,
                                   length)  # fmt: skip
    try:
        return hash_secret_raw(secret, kdf.salt, kdf.iterations, kdf.memory, kdf.cpus, length,
                               ARGON2[kdf.kind], ARGON2_VERSION)  # fmt: skip
    except (HashingError, MemoryError) as exc:
        raise LuksError(f"{where}: {kdf.kind} failed: {exc}") from exc


def _diffuse(block: bytes, name: str) -> bytes:
    size = hashlib.new(name).digest_size
    pieces = []
    for i in range(0, len(block), size):
        piece = block[i : i + size]
        pieces.append(
            hashlib.new(name, (i // size).to_bytes(4, "big") + piece).digest()[: len(piece)]
        )
    return b"".join(pieces)


def af_merge(material: bytes, key_size: int, stripes: int, name: str) -> bytes:
    """The key the anti-forensic splitter spread over ``stripes`` blocks of ``material``."""
    mixed = 0
    for i in range(stripes - 1):
        stripe = int.from_bytes(material[i * key_size : (i + 1) * key_size], "big")
        mixed = int.from_bytes(_diffuse((mixed ^ stripe).to_bytes(key_size, "big"), name), "big")
    last = int.from_bytes(material[(stripes - 1) * key_size : stripes * key_size], "big")
    return (mixed ^ last).to_bytes(key_size, "big")


def digest_for(header: LuksHeader, slot: int) -> Digest:
    """The digest that checks the key of ``slot`` for the data segment."""
    segment = header.segments[0].number if header.segments else 0
    for digest in header.digests:
        if slot in digest.keyslots and segment in digest.segments:
            return digest
    raise LuksError(f"key slot {slot} has no digest for data segment {segment}")


def key_matches(header: LuksHeader, slot: int, key: bytes) -> bool:
    """Whether ``key`` is the volume key the digest of ``slot`` describes."""
    digest = digest_for(header, slot)
    where = f"key slot {slot}'s digest"
    if not 0 < len(digest.value) <= 64:
        raise LuksError(f"{where} is {len(digest.value)} bytes long")
    check_kdf(Kdf("pbkdf2", digest.salt, digest.hash, digest.iterations), len(digest.value), where)
    name = hash_name(digest.hash, where)
    mine = hashlib.pbkdf2_hmac(name, key, digest.salt, digest.iterations, len(digest.value))
    return hmac.compare_digest(mine, digest.value)


def candidate(src: ByteSource, slot: Keyslot, secret: bytes) -> bytes:
    """The key ``slot`` holds if ``secret`` is its passphrase (random bytes if it is not)."""
    where = f"key slot {slot.number}"
    af_name = hash_name(slot.af_hash, where)
    if slot.stripes > MAX_STRIPES:
        raise LuksError(f"{where}: {slot.stripes} AF stripes (the limit is {MAX_STRIPES})")
    length = -(-slot.material // SECTOR) * SECTOR
    if length > slot.area.length or slot.area.start + length > src.size:
        raise LuksError(f"{where}: its key material runs past its area or the volume")
    try:
        check_key_size(slot.cipher, slot.area_key_size)
        stored = src.pread(length, slot.area.start)
    except InputError as exc:  # an unsupported cipher (LuksError), a read error
        raise LuksError(f"{where}: {exc.message}") from exc
    slot_key = derive(slot.kdf, secret, slot.area_key_size, where)
    cipher = SectorCipher(slot.cipher, slot_key, SECTOR)
    material = cipher.decrypt(0, stored)
    return af_merge(material, slot.key_size, slot.stripes, af_name)


def usable_slots(header: LuksHeader) -> list[Keyslot]:
    """Active slots in the order cryptsetup tries them: high priority first, "ignore" never."""
    slots = [s for s in header.keyslots if s.priority != PRIORITY_IGNORE]
    return sorted(slots, key=lambda s: -s.priority)


def unlock(src: ByteSource, header: LuksHeader, secret: bytes, what: str) -> VolumeKey:
    """The volume key ``secret`` (named ``what``: "passphrase 1") opens; LuksKeyError when it
    opens no slot, LuksError when no slot could even be tried (damaged, forged, unsupported)."""
    slots = usable_slots(header)
    if not slots:
        why = (
            "sets all its key slots to priority 'ignore'" if header.keyslots else "has no key slot"
        )
        raise LuksKeyError(f"{src.name}: this LUKS volume {why}: none is tried")
    wrong: list[int] = []
    problems: list[str] = []
    for slot in slots:
        try:
            key = candidate(src, slot, secret)
            if key_matches(header, slot.number, key):
                return VolumeKey(slot.number, key)
        except LuksError as exc:
            problems.append(exc.message)
            continue
        wrong.append(slot.number)
    refusal = f"{what} does not open key slot {' or '.join(map(str, wrong))}" if wrong else ""
    detail = "; ".join(filter(None, (refusal, *problems)))
    if wrong:
        raise LuksKeyError(f"{src.name}: {detail}")
    raise LuksError(f"{src.name}: {detail}")
