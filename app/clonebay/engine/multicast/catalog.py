"""What a multicast session carries, in the engine's words: the catalog and its objects.

net/ moves opaque *objects* (numbered byte strings of known size) and one opaque *catalog*.
Here an object is one frame of the image, exactly as stored in its pack (LZ4 or stored payload;
the frame header's fields are in the catalog), and the catalog is everything a receiver needs
to restore before a single object arrives (docs/multicast.md §3):

- the image's manifest (the same JSON as ``manifest.json``, checksum and all), which gives the
  partition table and regions the restore plans with;
- per object: codec id, raw length, xxh3-128 of the raw bytes;
- per region: every index record as (offset, length, flags, object number or -1).

Records that share a frame (deduplication) share an object, so a duplicate chunk crosses the
network once and is written at each of its places. ZERO and UNREADABLE records need no object.
The catalog is JSON compressed with zlib; the back channel's tag authenticates it.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from clonebay.imaging import manifest as manifest_json
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import ImageError, Record

CATALOG_VERSION = 1
MAX_CATALOG = 256 << 20  # decompressed; a 10 TB image's catalog is ~150 MB of JSON


@dataclass(frozen=True)
class ObjectInfo:
    codec: int
    raw_length: int
    digest: bytes


@dataclass(frozen=True)
class Catalog:
    manifest: Manifest
    objects: tuple[ObjectInfo, ...]
    records: dict[str, list[Record]]  # per region, index records rebuilt (pack fields 0)
    uses: dict[str, list[int]]  # per region, the object of each record (-1: ZERO/UNREADABLE)


class CatalogBuilder:
    """Collects records and objects, region by region; ``catalog()`` gives the bytes to send."""

    def __init__(self) -> None:
        self.objects: list[list[Any]] = []
        self.regions: dict[str, list[list[int]]] = {}
        self.sizes: list[int] = []

    def add(self, region: str, rec: Record, number: int) -> None:
        """A record of ``region`` using object ``number`` (-1: ZERO / UNREADABLE)."""
        self.regions.setdefault(region, []).append([rec.offset, rec.length, rec.flags, number])

    def new_object(self, rec: Record) -> int:
        """A new object for the frame ``rec`` describes; its number."""
        self.sizes.append(rec.stored_length)
        self.objects.append([rec.codec, rec.length, rec.digest.hex()])
        return len(self.sizes) - 1

    def catalog(self, manifest: Manifest) -> bytes:
        body = {
            "catalog_version": CATALOG_VERSION,
            "manifest": manifest_json.to_json(manifest).decode(),
            "objects": self.objects,
            "regions": {r.name: self.regions.get(r.name, []) for r in manifest.regions},
        }
        return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


class ImageObjects:
    """An image directory as a multicast source: its frames are the objects."""

    def __init__(self, reader: ImageReader) -> None:
        self.reader = reader
        first: dict[tuple[int, int], int] = {}
        self.where: list[tuple[str, Record]] = []
        build = CatalogBuilder()
        for region in reader.manifest.regions:
            for rec in reader.records(region.name):
                number = -1
                if not rec.flags:
                    key = (rec.pack, rec.pack_offset)
                    if key not in first:
                        first[key] = build.new_object(rec)
                        self.where.append((region.name, rec))
                    number = first[key]
                build.add(region.name, rec, number)
        self.catalog = build.catalog(reader.manifest)
        self.sizes = build.sizes

    def body(self, number: int) -> bytes:
        name, rec = self.where[number]
        return self.reader.read_payload(name, rec)


def parse_catalog(raw: bytes, sizes: list[int], name: str = "multicast catalog") -> Catalog:
    """The catalog a sender sent; ImageError when it is not one this version understands."""
    try:
        decomp = zlib.decompressobj()
        text = decomp.decompress(raw, MAX_CATALOG)
        if decomp.unconsumed_tail:
            raise ImageError(f"{name}: larger than {MAX_CATALOG >> 20} MiB")
        body = json.loads(text)
    except (zlib.error, ValueError) as exc:
        raise ImageError(f"{name}: not a catalog ({exc})") from None
    if body.get("catalog_version") != CATALOG_VERSION:
        raise ImageError(
            f"{name}: catalog version {body.get('catalog_version')!r}; this clonebay reads"
            f" {CATALOG_VERSION} (is the sender a newer clonebay?)"
        )
    manifest = manifest_json.parse(str(body["manifest"]).encode(), name)
    try:
        objects = tuple(ObjectInfo(int(c), int(n), bytes.fromhex(h)) for c, n, h in body["objects"])
        if len(objects) != len(sizes):
            raise ValueError(f"{len(objects)} objects, the sender announced {len(sizes)}")
        records: dict[str, list[Record]] = {}
        uses: dict[str, list[int]] = {}
        for region in manifest.regions:
            rows = body["regions"][region.name]
            records[region.name], uses[region.name] = [], []
            for offset, length, flags, number in rows:
                info = objects[number] if number >= 0 else None
                if info is not None and info.raw_length != length:
                    raise ValueError(f"region {region.name} offset {offset}: length mismatch")
                records[region.name].append(
                    Record(
                        int(offset),
                        int(length),
                        0,
                        0,
                        sizes[number] if info else 0,
                        info.codec if info else 0,
                        int(flags),
                        info.digest if info else bytes(16),
                    )
                )
                uses[region.name].append(int(number))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ImageError(f"{name}: malformed ({exc})") from None
    return Catalog(manifest, objects, records, uses)
