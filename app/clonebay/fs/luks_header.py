"""Reading a LUKS header from a volume: LUKS1's binary header, or LUKS2's two header copies.

LUKS1 (spec 1.2.3, section 2.4): a 592-byte big-endian header, then 8 key slot descriptors; no
checksum, so every offset it gives is checked against the volume's size here.

LUKS2 (spec 1.1, section 2): a 4096-byte binary header followed by the JSON area, ``hdr_size``
bytes in all (16 KiB to 4 MiB); a second copy (magic "SKUL\\xba\\xbe") follows at ``hdr_size``.
Each copy carries a checksum (``checksum_alg``, normally sha256) over its ``hdr_size`` bytes with
the checksum field zeroed. A copy whose magic, version, offset or checksum is wrong is not used;
when both are good the one with the higher ``seqid`` is (as cryptsetup does, which then repairs
the other; here nothing is ever written).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, replace

from clonebay.errors import InputError, LuksError
from clonebay.fs.luks_json import metadata
from clonebay.fs.luks_meta import SECTOR, Digest, Kdf, Keyslot, LuksHeader, Segment
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

MAGIC = b"LUKS\xba\xbe"
MAGIC2 = b"SKUL\xba\xbe"  # the LUKS2 secondary header copy
# LUKS1 phdr (spec 1.2.3 table 1): magic, version, cipher-name, cipher-mode, hash-spec,
# payload-offset (sectors), key-bytes, mk-digest, mk-digest-salt, mk-digest-iter, uuid.
LUKS1 = struct.Struct(">6sH32s32s32sII20s32sI40s")  # 208 bytes
# Key slot descriptor: active, iterations, salt, key-material-offset (sectors), stripes.
LUKS1_SLOT = struct.Struct(">II32sII")  # 48 bytes, 8 of them after the header
LUKS1_SLOTS = 8
LUKS1_SIZE = LUKS1.size + LUKS1_SLOTS * LUKS1_SLOT.size  # 592
SLOT_ENABLED, SLOT_DISABLED = 0x00AC71F3, 0x0000DEAD
# LUKS2 binary header (spec 1.1 table 1): magic, version, hdr_size, seqid, label, checksum_alg,
# salt, uuid, subsystem, hdr_offset, padding, csum; padded to 4096 bytes.
LUKS2 = struct.Struct(">6sHQQ48s32s64s40s48sQ184s64s")  # 512 bytes
LUKS2_BINARY = 4096
CSUM_OFFSET = 448
DETACHED_HINT = " (truncated, or a detached header whose data is on another device)"
HDR_SIZES = tuple(0x4000 << i for i in range(9))  # 16 KiB .. 4 MiB: the sizes cryptsetup writes


def is_luks(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _read(src: ByteSource, length: int, offset: int, what: str) -> bytes:
    if offset + length > src.size:
        raise LuksError(
            f"{src.name}: the LUKS {what} (bytes {offset}-{offset + length}) is past the end"
            f" of the {src.size}-byte volume (truncated?)"
        )
    try:
        return src.pread(length, offset)
    except InputError as exc:
        raise LuksError(f"{src.name}: the LUKS {what} cannot be read: {exc.message}") from exc


def read_header(src: ByteSource) -> LuksHeader:
    """The LUKS header at the start of ``src``; LuksError when it is damaged or truncated."""
    head = _read(src, 8, 0, "magic")
    if not is_luks(head):
        raise LuksError(f"{src.name}: no LUKS magic at the start")
    (version,) = struct.unpack_from(">H", head, 6)
    if version == 1:
        return _luks1(src)
    return _luks2(src)


def _luks1(src: ByteSource) -> LuksHeader:
    raw = _read(src, LUKS1_SIZE, 0, "LUKS1 header")
    (_, _, cipher, mode, hash_raw, payload, key_bytes, mk_digest, mk_salt, mk_iter, uuid) = (
        LUKS1.unpack_from(raw)
    )
    hash_name = _text(hash_raw).lower()
    if not 0 < key_bytes <= 512:
        raise LuksError(f"{src.name}: LUKS1 header says the master key is {key_bytes} bytes")
    spec = f"{_text(cipher)}-{_text(mode)}"
    slots, areas_end = [], LUKS1_SIZE
    for number in range(LUKS1_SLOTS):
        active, iterations, salt, material, stripes = LUKS1_SLOT.unpack_from(
            raw, LUKS1.size + number * LUKS1_SLOT.size
        )
        if active == SLOT_DISABLED:
            continue
        if active != SLOT_ENABLED:
            raise LuksError(
                f"{src.name}: LUKS1 key slot {number} is neither enabled nor disabled"
                f" (0x{active:08x}): the header is damaged"
            )
        length = -(-key_bytes * stripes // SECTOR) * SECTOR
        area = Extent(material * SECTOR, length)
        _inside(src, area, f"key slot {number}'s key material")
        if stripes == 0 or area.start < LUKS1_SIZE:
            raise LuksError(
                f"{src.name}: LUKS1 key slot {number} has {stripes} stripes at sector {material}"
            )
        areas_end = max(areas_end, area.end)
        kdf = Kdf("pbkdf2", salt, hash_name, iterations)
        slots.append(Keyslot(number, key_bytes, kdf, stripes, hash_name, area, spec, key_bytes))
    numbers = tuple(s.number for s in slots)
    digest = Digest(numbers, (0,), hash_name, mk_iter, mk_salt, mk_digest)
    segment = Segment(0, "crypt", payload * SECTOR, None, spec)
    _inside(src, Extent(segment.offset, 0), "data offset", DETACHED_HINT)
    return LuksHeader(1, _text(uuid), tuple(slots), (segment,), (digest,), areas_end)


def _inside(src: ByteSource, area: Extent, what: str, hint: str = "") -> None:
    if area.start < 0 or area.end > src.size or (area.length == 0 and area.start >= src.size):
        raise LuksError(
            f"{src.name}: the LUKS header puts the {what} at bytes {area.start}-{area.end},"
            f" past the end of the {src.size}-byte volume{hint}"
        )


@dataclass(frozen=True)
class _Copy:
    """One LUKS2 header copy that passed its checks: its binary fields and parsed JSON."""

    where: str  # "primary" or "secondary"
    hdr_size: int
    seqid: int
    label: str
    uuid: str
    subsystem: str
    tree: dict[str, object]


def _luks2_copy(src: ByteSource, offset: int, magic: bytes, where: str) -> _Copy:
    """The copy at ``offset``, checked; LuksError says what is wrong with it."""
    binary = _read(src, LUKS2_BINARY, offset, f"{where} header")
    fields = LUKS2.unpack_from(binary)
    found, version, hdr_size, _, _, csum_alg, _, _, _, hdr_offset, _, csum = fields
    if found != magic or version != 2:
        raise LuksError(f"{where} header: magic {found!r}, version {version}: not a LUKS2 header")
    if hdr_size not in HDR_SIZES or hdr_offset != offset:
        raise LuksError(
            f"{where} header: size {hdr_size} at offset {hdr_offset} (found at {offset}):"
            " not a LUKS2 header layout"
        )
    whole = bytearray(_read(src, hdr_size, offset, f"{where} header and JSON area"))
    alg = _text(csum_alg).lower()
    if alg not in ("sha1", "sha256", "sha512"):
        raise LuksError(f"{where} header: checksum algorithm {alg!r} is not supported")
    whole[CSUM_OFFSET : CSUM_OFFSET + 64] = bytes(64)
    digest = hashlib.new(alg, whole).digest()
    if csum != digest.ljust(64, b"\0"):
        raise LuksError(f"{where} header: {alg} checksum mismatch (header or JSON area damaged)")
    text = bytes(whole[LUKS2_BINARY:]).split(b"\0", 1)[0]
    try:
        tree = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LuksError(f"{where} header: its JSON area is not JSON ({exc})") from exc
    if not isinstance(tree, dict):
        raise LuksError(f"{where} header: its JSON area is not an object")
    label, uuid, subsystem = (_text(fields[i]) for i in (4, 7, 8))
    return _Copy(where, hdr_size, fields[3], label, uuid, subsystem, tree)


def _luks2(src: ByteSource) -> LuksHeader:
    """The better of the two LUKS2 copies, or LuksError naming what is wrong with each."""
    problems: list[str] = []
    copies: list[_Copy] = []
    try:
        copies.append(_luks2_copy(src, 0, MAGIC, "primary"))
    except LuksError as exc:
        problems.append(exc.message)
    # The secondary follows the primary; with the primary damaged, look where cryptsetup does.
    places = (copies[0].hdr_size,) if copies else HDR_SIZES
    for offset in places:
        if offset + LUKS2_BINARY > src.size or src.pread(len(MAGIC2), offset) != MAGIC2:
            continue
        try:
            copies.append(_luks2_copy(src, offset, MAGIC2, "secondary"))
        except LuksError as exc:
            problems.append(exc.message)
        break
    else:
        problems.append(f"secondary header: none at {', '.join(map(str, places))}")
    if not copies:
        raise LuksError(f"{src.name}: no usable LUKS2 header copy: {'; '.join(problems)}")
    best = max(copies, key=lambda c: c.seqid)  # the primary when both have the same seqid
    note = ""
    if len(copies) == 1:
        note = f"LUKS2 {best.where} header used: {problems[0]}"
    elif copies[0].seqid != copies[1].seqid:
        note = f"LUKS2 header copies differ (seqid {copies[0].seqid}, {copies[1].seqid})"
    where = f"{src.name}: LUKS2 {best.where} header"
    header = metadata(best.tree, best.hdr_size, where)
    for slot in header.keyslots:
        _inside(src, slot.area, f"key slot {slot.number}'s area")
    for segment in header.segments:
        place = Extent(segment.offset, segment.size or 0)
        _inside(src, place, f"data segment {segment.number}", DETACHED_HINT)
    _inside(src, Extent(0, header.areas_end), "keyslot areas")
    return replace(
        header,
        uuid=best.uuid,
        label=best.label,
        subsystem=best.subsystem,
        copy_note=note,
    )
