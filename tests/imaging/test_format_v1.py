"""Format v1 pinned down: an image assembled by hand from docs/format.md, the writer's bytes
checked against the documented offsets, and a frozen v1 image (made by clonebay 0.1.0) that every
later reader must still read.

A frozen image per released format version belongs in tests/data (DESIGN §3); until that folder
holds them, v1's is embedded below (zlib + base64 of the image files) so the test cannot be
skipped by a missing file.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import zlib
from pathlib import Path

import lz4.block
import xxhash

from clonebay.imaging.reader import ImageReader
from clonebay.imaging.writer import ImageWriter

IMAGE_ID = bytes(range(16))


def put(buf: bytearray, offset: int, fmt: str, *values: object) -> None:
    struct.pack_into("<" + fmt, buf, offset, *values)


def frame(codec: int, raw: bytes, payload: bytes) -> bytes:
    """A frame as docs/format.md §3 lays it out, byte by byte."""
    head = bytearray(32)
    head[0:4] = b"CBFR"
    put(head, 4, "BBH", codec, 0, 0)
    put(head, 8, "II", len(raw), len(payload))
    head[16:32] = xxhash.xxh3_128_digest(raw)
    return bytes(head) + payload


def record(fields: tuple[int, int, int, int, int, int], digest: bytes) -> bytes:
    """(offset, length, pack offset, stored length, codec, flags) + hash; pack is always 0."""
    offset, length, pack_offset, stored, codec, flags = fields
    rec = bytearray(48)
    put(rec, 0, "QIIQIBBH", offset, length, 0, pack_offset, stored, codec, flags, 0)
    rec[32:48] = digest
    return bytes(rec)


def test_an_image_assembled_from_the_spec_reads_back(tmp_path: Path) -> None:
    text = b"abc" * 1000
    other = bytes(range(100))
    packed = lz4.block.compress(text, store_size=False)
    pack = bytearray(32)
    pack[0:8] = b"CBPACK\r\n"
    put(pack, 8, "HHI", 1, 32, 0)
    pack[16:32] = IMAGE_ID
    first = len(pack)
    pack += frame(1, text, packed)
    second = len(pack)
    pack += frame(0, other, other)
    records = [
        record((0, 3000, first, len(packed), 1, 0), xxhash.xxh3_128_digest(text)),
        record((3000, 100, second, 100, 0, 0), xxhash.xxh3_128_digest(other)),
        record((5000, 1000, 0, 0, 0, 1), bytes(16)),  # ZERO
        record((6000, 500, 0, 0, 0, 2), bytes(16)),  # UNREADABLE
        record((8000, 3000, first, len(packed), 1, 0), xxhash.xxh3_128_digest(text)),  # dedup
    ]
    index = bytearray(128)
    index[0:8] = b"CBINDX\r\n"
    put(index, 8, "HHHHQQ", 1, 128, 48, 0, len(records), 20000)
    index[32:48] = IMAGE_ID
    index[48:52] = b"disk"
    index += b"".join(records)
    stats = {"records": 5, "frames": 2, "raw_bytes": 6100, "zero_bytes": 1000,
             "unreadable_bytes": 500, "dedup_bytes": 3000,
             "stored_bytes": len(pack) - 32}  # fmt: skip
    manifest = {
        "format": "clonebay-image", "format_version": 1, "requires": [], "tool": "by hand",
        "created": "2024-01-01T00:00:00Z", "image_id": IMAGE_ID.hex(), "chunk_size": 4096,
        "pack_limit": 1 << 20, "codec": "lz4", "hash": "xxh3-128", "source": {}, "table": {},
        "regions": [{
            "name": "disk", "kind": "disk", "disk_offset": 0, "size": 20000, "copy": "raw",
            "index": {"file": "disk.idx", "size": len(index),
                      "xxh3": xxhash.xxh3_128_hexdigest(bytes(index))},
            "stats": stats,
        }],
        "packs": [{"name": "000000.pack", "size": len(pack), "frames": 2}],
        "totals": stats, "future_key": {"ignored": True},
    }  # fmt: skip
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    manifest["checksum"] = "xxh3-128:" + xxhash.xxh3_128_hexdigest(canonical.encode())
    image = tmp_path / "image"
    for sub in ("packs", "index"):
        (image / sub).mkdir(parents=True)
    (image / "packs" / "000000.pack").write_bytes(pack)
    (image / "index" / "disk.idx").write_bytes(index)
    (image / "manifest.json").write_text(json.dumps(manifest))
    expected = bytearray(20000)
    expected[0:3000] = text
    expected[3000:3100] = other
    expected[8000:11000] = text
    with ImageReader(image) as r:
        assert r.read_at("disk", 0, 20000) == expected
        assert r.verify().ok
        assert [rec.flags for rec in r.records("disk")] == [0, 0, 1, 2, 0]


def test_writer_bytes_sit_where_the_spec_says(tmp_path: Path) -> None:
    text = b"spec " * 1000
    with ImageWriter(tmp_path / "img", chunk_size=4096) as w:
        w.begin_region("p1", "partition", 512, 10000)
        w.add_chunk(100, text[:4096])
        w.add_chunk(5000, bytes(4096))
        w.end_region()
        manifest = w.finish()
    pack = (tmp_path / "img" / "packs" / "000000.pack").read_bytes()
    assert pack[0:8] == b"CBPACK\r\n" and struct.unpack_from("<HHI", pack, 8) == (1, 32, 0)
    assert pack[16:32].hex() == manifest.image_id
    assert pack[32:36] == b"CBFR" and pack[36] == 1 and pack[37:40] == bytes(3)
    raw_len, stored = struct.unpack_from("<II", pack, 40)
    assert raw_len == 4096 and len(pack) == 64 + stored
    assert pack[48:64] == xxhash.xxh3_128_digest(text[:4096])
    assert lz4.block.decompress(pack[64:], uncompressed_size=4096) == text[:4096]
    index = (tmp_path / "img" / "index" / "p1.idx").read_bytes()
    assert index[0:8] == b"CBINDX\r\n"
    assert struct.unpack_from("<HHHHQQ", index, 8) == (1, 128, 48, 0, 2, 10000)
    assert index[48:112].rstrip(b"\0") == b"p1" and index[112:128] == bytes(16)
    first = struct.unpack_from("<QIIQIBBH", index, 128)
    assert first == (100, 4096, 0, 32, stored, 1, 0, 0)
    assert index[160:176] == pack[48:64]
    assert struct.unpack_from("<QIIQIBBH", index, 176) == (5000, 4096, 0, 0, 0, 0, 1, 0)


# clonebay 0.1.0, format 1: regions "mbr" and "p1" built by golden_regions() below.
GOLDEN_V1 = (
    "eNq1Vg1QFOcZXkIDKQQECROCtrme0SQC5+7e3u7eBVoEjCIFDBwqKtK93T3u4O723N3jzyJaKTKmM2qLkpqkGP/QJMTE"
    "0SQaMeKpadTM0EpEMyCok8QKsVB/itiE7u797R1HMmYmO7N3s+/3vP/P931vFGC2UXT1HKuBVZmp6gEAADIzsvOylkZF"
    "hABrAVD4fgRwPzGuv8jcooyyf3zYHHbedHi95Xa9oAr8JI/bscL9OUV4Q4R3eJ8qqrX7d9uG/rPg2JEVTyz3BhgdxEbI"
    "RNHj7pTtkJhxV8jEjMMD1AMztkM/TcKeCue7PxF3BP0fT3N2nQzVJ+8/eO1+98EWD87zvysAf23fxge64bg3WpKypg7s"
    "2hrmKeExd6X+C/h/jxT9r3skZF6YsXJ7HROj0ktFeJh40v3xP9QBYJF/h4N1Xf6kv/Zw8UcBVsJmNtIcryrnGFv6YwCw"
    "OkKhUBoZ1krwSp1CSVoYG20galLMVqKMVib7VksraZYzMzYBBUlill7lMLM0JwiWl0gSnmEsciMKUAWpQJcRkqUJnqbE"
    "ZRiE0RQISoE1egjXIbgO0ixzgSSnpWYJBRoQSqNBYBSjIAOuRUCUJFHcoMHVKGlUY0a3WZPDVlHKmWtpQQcBtagktRNk"
    "RanFbDWLOeGQFnZhGYomRdOWWsSlbSI4kyiorjapUyAYd0k5xsGSoj2xNsK3VdCT8ipjLBRtk0AizOUUBrUYpIEFWZ2r"
    "CITBIlOuEPaUqGvlKIZTelEsXSbUUqqdhHOhhQUbYaUlvIF1O5IZYYmqFEIopG+FMnMVpYzRyNFiqqBXHlARSWbk+Bq7"
    "ZNynbyEMrtx8IofD1QCfhOOF1vmLSMZe445IpsnRVKmhhpc44edaiJmTqKM0MAyvEDvhU7MxvIxFkkg6iLxFdEVvtngK"
    "Ix5PXnVZJ2BEJhR7KuLVkAFUUySIGCktjKtpI0GrQYMWRVAKojASUrpV6vzS5fydszTJsJQohGUujKzQLM6zITxQospb"
    "Aw0kh9fSLONdUmtwebQOm1AiSqSOFwHKlimactiDrnA8w8qrjk1Ih67mWUJMpy5CtjCBcHZoIt/sBMubeXHTT0I4CERw"
    "DYYG0g7VaNTBeCeEggThHitw4kfyz0bw5kp6Egr6h+Hj4I+lnutiDMI8BA3GPIikYI2aBg2oVitsBg2IG0AEwnAEM0Ao"
    "TBkfknlYMOapJ2EepEZxfDLuybdmcO75E9effQjmpx1AQC0I/iADhd8S7zn9PWcgKD0qEaUMpJgW0/oI5qkGEmC/imBt"
    "ZluZ7Iry5TrRretMDtwLXq7DAtd9B6yFtpXxJlepArzyDE9YfG2UtdAdsixgt8CvdQgMuv34tw1DPf6/t2WTtmtCq6TD"
    "os59j9JCKxxW+W2og0kNZQAhHDOCBGUgQSMIkhqtxgjCJGWAYa0yoi4iFpCaOEfWqwuh4uS4aG5mjjg5KoJOipkZLxaE"
    "uKeaKUFm1/xBcrMwIY1/KU5ERW964TGuYStw0BqP9M4crktaIY0SikpIpUgExv2fvkUSJtBm4HA4Him34m8/iE0JI9r0"
    "DGDiGziANfYtqbZlN6hWbGCOpt6Kbn5278ncUxXp6r1jM6//ch5+pGfzA1Pn2KVOMoL/IClPczKr6ctMoGFN08U056/3"
    "bf1iZ03xo12Le/BjX7dvrsci3loW9kpl+bWo8UbUknd0duGrr9s3tNxbqOrBVuel5VOb8ZcTMtMO7WnYqM9JutOQ8P4v"
    "4sLKdR9VlaadiR361/ju+rG+BvvnSMN1+7vH/77/RGtn9tHhsyNVl9APhn6bv/7whZq+7qb5mv7abZFt0956MLOj9smm"
    "E+1WFLgVe2X9Pdas/ObtsZiB0ejpAzmnz+GO4rUtwzsGSneXJwJZVTvrzj69acU7R4rTFx8vz/rLjFMt85259zoK30wY"
    "JKeEv6cvWEovvYmknCs0rVH/5mJBYTyWac2KiS83zwh96cSj+i17Vp1Hd/e/+3VxynNXohvnmArq9+ouNBYj3y0viXCE"
    "j328ZLxNuys6yjndOfqzuISW0e79L/eF9s7LyGiPuuTcvWrdgbYPX3pBf+x0Werlu02b7m1p+/fgZw9m//HQ3KufVqz/"
    "U+LrdN47050nTulvrhu5fCf1qbbjrYteLco988mSzsde4DqZVN39ju92hH5RuRZpLanv6FFe7v1WvS3ftLJ5T84ac8+q"
    "VzZ2zrz4ZOS5HbO2w8/cDY/O5FKfIYsT21pnty1e3Fp2vciJtQ2fjzUcTs7+dDw2sur93APhVTdu1PQ+ElaTtLf+6QNx"
    "SVMPrr2z6dSzf63sXWg89yv+yIj+jcb2oa0Jo8jKsx3NOZnOA8sKOmOeG4p/6vHBb4YHV9zuOR5fm/zVjcSQ7N6Sr15r"
    "3jIrret5+z/7VIf4K0WphflvF0feXKe7n3z5iQU34uHxkD9/hn3rXNB/Zm5axMJb7zmvRlfezP359k8e/D5Tv7Jsdfu0"
    "2Mapcc9fXdD1NwZBbu8vvPv56B9grBzYYFefju3o4eJmTJ3TPyt35Uf2XEX/i/N1OzuV/weZ4TOh"
)


def golden_regions() -> dict[str, bytes]:
    """The bytes the frozen image was made from (random.Random(2024) is stable across Pythons)."""
    text = b"clonebay golden image v1. " * 400
    noise = random.Random(2024).randbytes(700)
    mbr = bytearray(4096)
    mbr[0:3], mbr[510:512] = b"\xeb\x63\x90", b"\x55\xaa"
    p1 = bytearray(65536)
    p1[0:8192] = text[:8192]
    p1[8192:8892] = noise
    p1[12288:16384] = text[:4096]
    p1[40000:40700] = noise
    return {"mbr": bytes(mbr), "p1": bytes(p1)}


def unpack_golden(target: Path) -> None:
    blob = zlib.decompress(base64.b64decode("".join(GOLDEN_V1)))
    pos = 0
    while pos < len(blob):
        name_len = int.from_bytes(blob[pos : pos + 2], "little")
        name = blob[pos + 2 : pos + 2 + name_len].decode()
        pos += 2 + name_len
        size = int.from_bytes(blob[pos : pos + 4], "little")
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(blob[pos + 4 : pos + 4 + size])
        pos += 4 + size


def test_frozen_v1_image_still_reads(tmp_path: Path) -> None:
    unpack_golden(tmp_path / "v1")
    with ImageReader(tmp_path / "v1") as r:
        assert r.manifest.format_version == 1 and r.manifest.tool == "clonebay 0.1.0"
        for name, data in golden_regions().items():
            assert r.read_at(name, 0, len(data) + 1) == data
        assert r.verify().ok
        assert r.manifest.totals.dedup_bytes == 4096 + 700
        assert [(u.region, u.offset, u.length) for u in r.manifest.unreadable] == [
            ("p1", 20480, 512)
        ]
