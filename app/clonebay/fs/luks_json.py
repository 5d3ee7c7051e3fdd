"""The LUKS2 JSON area: keyslots, segments, digests, tokens and config, checked and typed.

The JSON (spec 1.1, section 3) is read as untrusted input: every field is fetched through one
typed accessor that raises LuksError naming the object and field, so a hostile or damaged area
ends in a message, never a KeyError. LUKS2 writes 64-bit numbers as decimal strings ("offset":
"16777216") and small ones as JSON numbers; binary values (salts, digests) as base64.

What is kept: keyslots of type "luks2" with their KDF, AF and raw area; "crypt" and "linear"
segments (a linear one, or more than one, means a reencryption is under way); "pbkdf2" digests;
the mandatory requirements (cryptsetup refuses a volume whose requirements it does not know, and
so does this reader, later, in luks_view). Keyslot areas must lie inside the keyslots area, which
follows the two header copies: ``[2 * hdr_size, 2 * hdr_size + keyslots_size)``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from clonebay.errors import LuksError
from clonebay.fs.luks_meta import PRIORITY_NORMAL, SECTOR, Digest, Kdf, Keyslot, LuksHeader, Segment
from clonebay.model import Extent

T = TypeVar("T")
Tree = dict[str, object]
U64 = 1 << 64


def _decimal(value: object) -> bool:
    """A string of ASCII digits, short enough to be a u64 ("²" is a digit to str.isdigit)."""
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20


def _get(obj: Tree, key: str, kind: type[T], where: str) -> T:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise LuksError(f"{where}: {key!r} is missing or not a {kind.__name__}")
    return value


def _number(obj: Tree, key: str, where: str, default: int | None = None) -> int:
    """A JSON number or a decimal string (LUKS2's u64), in [0, 2**64)."""
    value = obj.get(key, default)
    if _decimal(value):
        value = int(str(value))
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < U64:
        raise LuksError(f"{where}: {key!r} is missing or not a number ({value!r})")
    return value


def _base64(obj: Tree, key: str, where: str) -> bytes:
    try:
        return base64.b64decode(_get(obj, key, str, where), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LuksError(f"{where}: {key!r} is not base64") from exc


def _ids(obj: Tree, key: str, where: str) -> tuple[int, ...]:
    items = _get(obj, key, list, where)
    if not all(_decimal(i) for i in items):
        raise LuksError(f"{where}: {key!r} is not a list of numbers")
    return tuple(int(i) for i in items)


def _objects(tree: Tree, key: str, where: str) -> list[tuple[int, Tree]]:
    """The numbered objects of section ``key`` ("keyslots": {"0": {...}}), by number."""
    section = _get(tree, key, dict, where)
    out = []
    for name, obj in section.items():
        if not (_decimal(name) and isinstance(obj, dict)):
            raise LuksError(f"{where}: {key} entry {name!r} is not a numbered object")
        out.append((int(name), obj))
    return sorted(out, key=lambda item: item[0])


def _kdf(obj: Tree, where: str) -> Kdf:
    kind = _get(obj, "type", str, where)
    salt = _base64(obj, "salt", where)
    if kind == "pbkdf2":
        return Kdf(kind, salt, _get(obj, "hash", str, where), _number(obj, "iterations", where))
    if kind in ("argon2i", "argon2id"):
        passes, memory = _number(obj, "time", where), _number(obj, "memory", where)
        return Kdf(kind, salt, "", passes, memory, _number(obj, "cpus", where))
    raise LuksError(f"{where}: KDF {kind!r} is not supported")


def _keyslot(number: int, obj: Tree, keyslots: Extent, where: str) -> Keyslot:
    where = f"{where}, keyslot {number}"
    af = _get(obj, "af", dict, where)
    area = _get(obj, "area", dict, where)
    if _get(af, "type", str, where) != "luks1" or _get(area, "type", str, where) != "raw":
        raise LuksError(f"{where}: AF {af.get('type')!r} or area {area.get('type')!r} unknown")
    place = Extent(_number(area, "offset", where), _number(area, "size", where))
    slot = Keyslot(
        number,
        _number(obj, "key_size", where),
        _kdf(_get(obj, "kdf", dict, where), where),
        _number(af, "stripes", where),
        _get(af, "hash", str, where),
        place,
        _get(area, "encryption", str, where),
        _number(area, "key_size", where),
        _number(obj, "priority", where, PRIORITY_NORMAL),
    )
    if not (0 < slot.key_size <= 512 and 0 < slot.area_key_size <= 512 and slot.stripes > 0):
        raise LuksError(f"{where}: key size {slot.key_size}, {slot.stripes} stripes")
    inside = keyslots.start <= place.start and place.end <= keyslots.end
    if not inside or slot.material > place.length or place.start % SECTOR:
        raise LuksError(
            f"{where}: area {place.start}-{place.end} ({slot.material} bytes of key material)"
            f" is not inside the keyslots area {keyslots.start}-{keyslots.end}"
        )
    return slot


def _segment(number: int, obj: Tree, where: str) -> Segment:
    where = f"{where}, segment {number}"
    kind = _get(obj, "type", str, where)
    size_text = obj.get("size")
    size = None if size_text == "dynamic" else _number(obj, "size", where)
    flags = obj.get("flags", [])
    integrity = obj.get("integrity")
    algorithm = ""
    if isinstance(integrity, dict):
        algorithm = str(integrity.get("type", "unknown"))
    elif integrity is not None:
        algorithm = "unknown"
    offset = _number(obj, "offset", where)
    if kind != "crypt":
        return Segment(number, kind, offset, size, "", integrity=algorithm)
    sector = _number(obj, "sector_size", where)
    if sector not in (512, 1024, 2048, 4096) or offset % SECTOR:
        raise LuksError(f"{where}: sector size {sector} at offset {offset}")
    return Segment(
        number,
        kind,
        offset,
        size,
        _get(obj, "encryption", str, where),
        sector,
        _number(obj, "iv_tweak", where, 0),
        algorithm,
        tuple(str(f) for f in flags) if isinstance(flags, list) else ("?",),
    )


def _digest(obj: Tree, where: str) -> Digest:
    kind = _get(obj, "type", str, where)
    if kind != "pbkdf2":
        raise LuksError(f"{where}: digest type {kind!r} is not supported")
    return Digest(
        _ids(obj, "keyslots", where),
        _ids(obj, "segments", where),
        _get(obj, "hash", str, where),
        _number(obj, "iterations", where),
        _base64(obj, "salt", where),
        _base64(obj, "digest", where),
    )


def _each(tree: Tree, key: str, where: str, make: Callable[[int, Tree], T]) -> tuple[T, ...]:
    return tuple(make(number, obj) for number, obj in _objects(tree, key, where))


def metadata(tree: Tree, hdr_size: int, where: str) -> LuksHeader:
    """The LUKS2 JSON ``tree`` of a header copy of ``hdr_size`` bytes, without the binary
    header's fields (uuid, label), which the caller adds."""
    config = _get(tree, "config", dict, where)
    json_size = _number(config, "json_size", where)
    if json_size != hdr_size - 4096:
        raise LuksError(f"{where}: config.json_size {json_size} for a {hdr_size}-byte header")
    keyslots = Extent(2 * hdr_size, _number(config, "keyslots_size", where))
    requirements = config.get("requirements", {})
    mandatory = requirements.get("mandatory", []) if isinstance(requirements, dict) else ["?"]
    slots, reencrypt = [], []
    for number, obj in _objects(tree, "keyslots", where):
        kind = _get(obj, "type", str, f"{where}, keyslot {number}")
        if kind == "reencrypt":
            reencrypt.append(number)
        elif kind == "luks2":
            slots.append(_keyslot(number, obj, keyslots, where))
        else:
            raise LuksError(f"{where}, keyslot {number}: type {kind!r} is not supported")
    segments = _each(tree, "segments", where, lambda n, o: _segment(n, o, where))
    digests = _each(tree, "digests", where, lambda n, o: _digest(o, f"{where}, digest {n}"))
    tokens = _each(tree, "tokens", where, lambda n, o: str(o.get("type", "?")))
    return LuksHeader(
        2,
        "",
        tuple(slots),
        segments,
        digests,
        keyslots.end,
        requirements=tuple(str(m) for m in mandatory) if isinstance(mandatory, list) else ("?",),
        reencrypt_slots=tuple(reencrypt),
        tokens=tokens,
    )
