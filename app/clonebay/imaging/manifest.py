"""manifest.json: what an image holds, as frozen dataclasses, with a checked JSON round trip.

The manifest is the commit point of an image (it is written last, by atomic rename) and the only
file a human reads, so it is pretty-printed JSON. It carries its own checksum: xxh3-128 of the
canonical form of every other key (sorted keys, no whitespace, UTF-8), so that a flipped digit in a
disk offset or a pack size is an error rather than a restore to the wrong place. ``parse`` checks
format name, version and required features first (a newer image gets a clear "newer clonebay"
error), then the checksum, then every field the reader relies on, with the key path in the
message. Unknown keys are ignored: later versions may add keys without breaking older readers.
The ``source`` and ``table`` sections are declared in source_disk.py; a region's ``extra`` holds
its partition number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from clonebay.imaging.jsonfields import JsonObject
from clonebay.imaging.source_disk import MAX_PARTITION_NUMBER, SourceInfo, TableInfo
from clonebay.imaging.spec import (
    COPY_METHODS,
    FORMAT_NAME,
    FORMAT_VERSION,
    HASH_NAME,
    MAX_CHUNK_SIZE,
    MAX_PACK_SIZE,
    MIN_CHUNK_SIZE,
    REGION_KINDS,
    ImageError,
    NewerFormatError,
    index_name,
    valid_pack_name,
    valid_region_name,
)

CHECKSUM_KEY = "checksum"
CHECKSUM_PREFIX = HASH_NAME + ":"
# Features an image may name in "requires" that this reader supports (docs/format.md §9, §11).
FEATURE_INDEX_REVISIONS = "index-revisions"  # an edited image: REGION.rN.idx, superseded frames
KNOWN_FEATURES: frozenset[str] = frozenset({FEATURE_INDEX_REVISIONS})
COUNTER_NAMES = (
    "records", "frames", "raw_bytes", "zero_bytes", "unreadable_bytes", "dedup_bytes",
    "stored_bytes",
)  # fmt: skip


@dataclass
class Counters:
    """Per region and in total. raw_bytes counts bytes under frame records (dedup_bytes of them
    reuse a frame written earlier); stored_bytes counts frame headers + payloads appended to packs.
    """

    records: int = 0
    frames: int = 0
    raw_bytes: int = 0
    zero_bytes: int = 0
    unreadable_bytes: int = 0
    dedup_bytes: int = 0
    stored_bytes: int = 0

    @property
    def copied_bytes(self) -> int:
        return self.raw_bytes + self.zero_bytes + self.unreadable_bytes

    def add(self, other: Counters) -> None:
        for name in COUNTER_NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}


@dataclass(frozen=True)
class RegionEntry:
    name: str
    kind: str  # "partition", "raw-area", "disk"
    disk_offset: int
    size: int
    copy: str  # "native" or "raw"
    index_file: str
    index_size: int
    index_xxh3: str
    stats: Counters
    fstype: str = ""
    label: str = ""
    uuid: str = ""
    state: str = ""
    used_bytes: int = 0
    reason: str = ""
    notes: tuple[str, ...] = ()
    partition: int | None = None  # the source partition's number (JSON: extra.partition)
    index_revision: int = 0  # > 0: the index an edit committed (file REGION.rN.idx)


@dataclass(frozen=True)
class PackEntry:
    name: str
    size: int
    frames: int


@dataclass(frozen=True)
class UnreadableRange:
    region: str
    offset: int
    length: int


@dataclass(frozen=True)
class Manifest:
    tool: str
    created: str
    image_id: str  # 32 hex digits; also in every pack and index header
    chunk_size: int
    pack_limit: int
    codec: str
    regions: tuple[RegionEntry, ...]
    packs: tuple[PackEntry, ...]
    totals: Counters
    source: SourceInfo = field(default_factory=SourceInfo)
    table: TableInfo = field(default_factory=TableInfo)  # kind "": none recorded (JSON {})
    warnings: tuple[str, ...] = ()
    unreadable: tuple[UnreadableRange, ...] = ()
    format_version: int = FORMAT_VERSION
    requires: tuple[str, ...] = ()
    revision: int = 0  # edits committed so far (docs/format.md §11); 0 for a saved image
    revisions: tuple[Mapping[str, Any], ...] = ()  # one history record per committed edit

    def region(self, name: str) -> RegionEntry:
        for entry in self.regions:
            if entry.name == name:
                return entry
        raise KeyError(name)


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes the checksum covers: sorted keys, no whitespace, UTF-8, no floats."""
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _check_no_floats(value: object, path: str) -> None:
    if isinstance(value, float):
        raise ValueError(f"manifest {path}: floats are not allowed (use an integer or a string)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_no_floats(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_no_floats(item, f"{path}[{i}]")


def to_json(manifest: Manifest) -> bytes:
    """Serialise with the checksum; ValueError/TypeError for caller data JSON cannot carry."""
    body: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": manifest.format_version,
        "requires": list(manifest.requires),
        "tool": manifest.tool,
        "created": manifest.created,
        "image_id": manifest.image_id,
        "chunk_size": manifest.chunk_size,
        "pack_limit": manifest.pack_limit,
        "codec": manifest.codec,
        "hash": HASH_NAME,
        "source": manifest.source.to_json(),
        "table": manifest.table.to_json(),
        "regions": [region_json(r) for r in manifest.regions],
        "packs": [{"name": p.name, "size": p.size, "frames": p.frames} for p in manifest.packs],
        "warnings": list(manifest.warnings),
        "unreadable": [
            {"region": u.region, "offset": u.offset, "length": u.length}
            for u in manifest.unreadable
        ],
        "totals": manifest.totals.as_dict(),
    }
    if manifest.revision:  # absent from a saved image, so its manifest is as format 1 began
        body["revision"] = manifest.revision
        body["revisions"] = [dict(r) for r in manifest.revisions]
    _check_no_floats(body, "manifest")
    try:  # the writer never writes a manifest its reader would refuse
        _check_sections(JsonObject(body, "", "manifest being written"))
    except ImageError as exc:
        raise ValueError(str(exc)) from None
    body[CHECKSUM_KEY] = CHECKSUM_PREFIX + xxhash.xxh3_128_hexdigest(canonical(body))
    return json.dumps(body, indent=2, ensure_ascii=False, allow_nan=False).encode() + b"\n"


def region_json(r: RegionEntry) -> dict[str, Any]:
    index: dict[str, Any] = {"file": r.index_file, "size": r.index_size, "xxh3": r.index_xxh3}
    if r.index_revision:
        index["revision"] = r.index_revision
    return {
        "name": r.name, "kind": r.kind, "disk_offset": r.disk_offset, "size": r.size,
        "fstype": r.fstype, "label": r.label, "uuid": r.uuid, "state": r.state, "copy": r.copy,
        "used_bytes": r.used_bytes, "reason": r.reason, "notes": list(r.notes),
        "index": index,
        "stats": r.stats.as_dict(),
        "extra": {} if r.partition is None else {"partition": r.partition},
    }  # fmt: skip


def parse(raw: bytes, file: str) -> Manifest:
    """Parse and check manifest.json bytes; ``file`` (its path) names it in every error."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ImageError(f"{file}: not valid JSON ({exc})") from None
    top = JsonObject(obj, "", file)
    if top.obj.get("format") != FORMAT_NAME:
        raise ImageError(
            f"{file}: not a clonebay image manifest (format {top.obj.get('format')!r})"
        )
    version = top.integer("format_version", 1, 1 << 31)
    if version > FORMAT_VERSION:
        raise NewerFormatError(
            f"{file}: made by a newer clonebay (format {version}); "
            f"this one reads up to {FORMAT_VERSION}"
        )
    unknown = sorted(set(top.texts("requires")) - KNOWN_FEATURES)
    if unknown:
        raise NewerFormatError(
            f"{file}: needs features this clonebay lacks ({', '.join(unknown)}); "
            "it was made by a newer clonebay"
        )
    _check_checksum(top.obj, file)
    if top.text("hash") != HASH_NAME:
        raise top.fail("hash", f"is {top.obj.get('hash')!r}, expected {HASH_NAME!r}")
    image_id = top.text("image_id")
    if len(image_id) != 32 or not all(c in "0123456789abcdef" for c in image_id):
        raise top.fail("image_id", "must be 32 lower-case hex digits")
    requires = top.texts("requires")
    revision = top.integer("revision", default=0)
    regions = tuple(parse_region(r, revision) for r in top.objects("regions"))
    if revision and FEATURE_INDEX_REVISIONS not in requires:
        raise top.fail("revision", f"is {revision} but requires lacks {FEATURE_INDEX_REVISIONS!r}")
    revisions = top.items("revisions")
    if not all(isinstance(r, dict) for r in revisions):
        raise top.fail("revisions", "must be a list of objects")
    if len({r.name for r in regions}) != len(regions):
        raise top.fail("regions", "has two regions with the same name")
    packs = tuple(parse_pack(p) for p in top.objects("packs"))
    source, table = _check_sections(top)
    return Manifest(
        format_version=version,
        tool=top.text("tool"),
        created=top.text("created"),
        image_id=image_id,
        chunk_size=top.integer("chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
        pack_limit=top.integer("pack_limit", 1, MAX_PACK_SIZE),
        codec=top.text("codec", ("lz4", "stored")),
        regions=regions,
        packs=packs,
        totals=parse_counters(top.sub("totals")) if "totals" in top.obj else Counters(),
        source=source,
        table=table,
        warnings=top.texts("warnings"),
        unreadable=tuple(parse_unreadable(u) for u in top.objects("unreadable")),
        requires=requires,
        revision=revision,
        revisions=tuple(revisions),
    )


def _check_sections(top: JsonObject) -> tuple[SourceInfo, TableInfo]:
    """``source`` and ``table``, and each partition region's number against the table."""
    source = SourceInfo.from_json(top.obj.get("source"), top.file)
    table = TableInfo.from_json(top.obj.get("table"), top.file)
    for region in top.objects("regions"):
        extra = region.sub("extra", {})
        number = extra.optional_integer("partition", 0, MAX_PARTITION_NUMBER)
        if not number or not table.partitions:
            continue
        part = table.partition(number)
        if part is None:
            raise extra.fail("partition", f"{number} is not a partition of table.partitions")
        if region.obj.get("disk_offset") != part.start:
            raise region.fail(
                "disk_offset", f"must be {part.start}, where partition {number} starts"
            )
    return source, table


def _check_checksum(obj: dict[str, Any], file: str) -> None:
    body = dict(obj)
    stated = body.pop(CHECKSUM_KEY, None)
    if not isinstance(stated, str) or not stated.startswith(CHECKSUM_PREFIX):
        raise ImageError(f"{file}: no {HASH_NAME} checksum (key {CHECKSUM_KEY!r})")
    try:
        found = CHECKSUM_PREFIX + xxhash.xxh3_128_hexdigest(canonical(body))
    except ValueError as exc:  # NaN or Infinity: never written by clonebay
        raise ImageError(f"{file}: value JSON cannot carry ({exc})") from None
    if found != stated:
        raise ImageError(
            f"{file}: manifest checksum mismatch (stated {stated}, computed {found}):"
            " the manifest was damaged or edited"
        )


def parse_counters(f: JsonObject) -> Counters:
    return Counters(**{name: f.integer(name) for name in COUNTER_NAMES})


def parse_region(f: JsonObject, image_revision: int) -> RegionEntry:
    name = f.text("name")
    if not valid_region_name(name):
        raise f.fail("name", f"{name!r} is not a valid region name")
    index = f.sub("index")
    revision = index.integer("revision", 0, image_revision, default=0)
    if index.text("file") != index_name(name, revision):
        raise index.fail("file", f"must be {index_name(name, revision)!r}")
    xxh3 = index.text("xxh3")
    if len(xxh3) != 32:
        raise index.fail("xxh3", "must be 32 hex digits")
    return RegionEntry(
        name=name,
        kind=f.text("kind", REGION_KINDS),
        disk_offset=f.integer("disk_offset"),
        size=f.integer("size"),
        copy=f.text("copy", COPY_METHODS),
        index_file=index.text("file"),
        index_size=index.integer("size"),
        index_xxh3=xxh3,
        stats=parse_counters(f.sub("stats")),
        fstype=f.text("fstype"),
        label=f.text("label"),
        uuid=f.text("uuid"),
        state=f.text("state"),
        used_bytes=f.integer("used_bytes", default=0),
        reason=f.text("reason"),
        notes=f.texts("notes"),
        partition=f.sub("extra", {}).optional_integer("partition", 0, MAX_PARTITION_NUMBER) or None,
        index_revision=revision,
    )


def parse_unreadable(f: JsonObject) -> UnreadableRange:
    return UnreadableRange(f.text("region"), f.integer("offset"), f.integer("length"))


def parse_pack(f: JsonObject) -> PackEntry:
    name = f.text("name")
    if not valid_pack_name(name):
        raise f.fail("name", f"{name!r} is not a pack file name (NNNNNN.pack)")
    return PackEntry(
        name=name, size=f.integer("size", 0, MAX_PACK_SIZE), frames=f.integer("frames")
    )
