"""Write images of random, compressible, zero, duplicate and unreadable chunks; read them back.

The truth is a bytearray per region built alongside the writer calls: bytes never added (free
space) and zero/unreadable runs are zeros in it, everything else is the bytes given.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clonebay.imaging import codec, spec
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.source_disk import SourceInfo, TableInfo
from clonebay.imaging.writer import ImageWriter

CHUNK = 4096
PACK_LIMIT = 10_000  # two raw frames at most per pack: many packs, frames that just fit


@dataclass
class Built:
    path: Path
    truth: dict[str, bytearray]
    copied: dict[str, list[tuple[int, int, str]]]  # (offset, length, "data"|"zero"|"unreadable")


def words(rnd: random.Random, n: int) -> bytes:
    vocab = [b"inode", b"block", b"extent", b"superblock", b"journal", b" ", b"\n", b"\0\0"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(vocab)
    return bytes(out[:n])


def build_image(path: Path, seed: int, regions: int = 8) -> Built:
    """A deterministic image with every kind of chunk, in ``regions`` regions."""
    rnd = random.Random(seed)
    truth: dict[str, bytearray] = {}
    copied: dict[str, list[tuple[int, int, str]]] = {}
    pool: list[bytes] = []
    kinds = ("partition", "raw-area", "disk")
    with ImageWriter(path, chunk_size=CHUNK, pack_limit=PACK_LIMIT) as w:
        for r in range(regions):
            name = f"p{r + 1}"
            size = rnd.randint(0, 250_000) if r else 0  # the first region is empty
            data = truth[name] = bytearray(size)
            log = copied[name] = []
            w.begin_region(name, kinds[r % 3], 1_048_576 * (r + 1), size, fstype="ext4")
            pos = 0
            while pos < size:
                n = min(rnd.randint(1, 2 * CHUNK + 100), size - pos)
                action = rnd.choice(
                    ["gap", "random", "text", "zeros", "zero-run", "unreadable", "dup", "encoded"]
                )
                if action == "dup" and pool:
                    chunk = rnd.choice(pool)
                    n = len(chunk)
                    if pos + n > size:
                        break
                elif action == "random":
                    chunk = rnd.randbytes(n)
                elif action in ("text", "encoded"):
                    chunk = words(rnd, min(n, CHUNK))
                    n = len(chunk)
                else:
                    chunk = bytes(n)
                if action == "gap":
                    pass
                elif action == "zero-run":
                    w.add_zero(pos, n)
                    log.append((pos, n, "zero"))
                elif action == "unreadable":
                    w.add_unreadable(pos, n)
                    log.append((pos, n, "unreadable"))
                elif action == "encoded":
                    w.add_encoded(pos, n, codec.encode_chunk(chunk))
                    log.append((pos, n, "data"))
                else:
                    w.add_chunk(pos, chunk)
                    log.append((pos, n, "zero" if not any(chunk) else "data"))
                if action not in ("gap", "zero-run", "unreadable"):
                    data[pos : pos + n] = chunk
                    if len(chunk) <= CHUNK:
                        pool.append(chunk)
                pos += n + (rnd.randint(0, 3000) if rnd.random() < 0.3 else 0)
            w.end_region()
        w.finish(source=SourceInfo(model="test disk", size=10**9), table=TableInfo("gpt"))
    return Built(path, truth, copied)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_image(tmp_path_factory.mktemp("img") / "image", seed=7)


@pytest.fixture(scope="module")
def reader(built: Built) -> ImageReader:
    return ImageReader(built.path)


def test_whole_regions_read_back(built: Built, reader: ImageReader) -> None:
    assert [r.name for r in reader.regions] == list(built.truth)
    for name, data in built.truth.items():
        assert reader.read_at(name, 0, len(data) + 100) == data
        assert reader.region(name).size == len(data)


@settings(max_examples=300)
@given(st.data())
def test_random_ranges_read_back(built: Built, reader: ImageReader, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(built.truth)))
    truth = built.truth[name]
    offset = data.draw(st.integers(0, len(truth)))
    length = data.draw(st.integers(0, 3 * CHUNK))
    assert reader.read_at(name, offset, length) == truth[offset : offset + length]


def test_iter_chunks_yields_the_copied_data_in_order(built: Built, reader: ImageReader) -> None:
    for name, truth in built.truth.items():
        chunks = list(reader.iter_chunks(name))
        offsets = [offset for offset, _ in chunks]
        assert offsets == sorted(offsets)
        for offset, chunk in chunks:
            assert bytes(chunk) == truth[offset : offset + len(chunk)]
            assert any(chunk)  # zero chunks were never stored
        with_zeros = list(reader.iter_chunks(name, include_zeros=True))
        covered = sum(len(c) for _, c in with_zeros)
        expected = sum(n for _, n, _ in built.copied[name])
        assert covered == expected  # every byte copied, zero or not, and nothing else


def test_index_says_which_bytes_were_copied(built: Built, reader: ImageReader) -> None:
    """Zero and unreadable runs are recorded; free space has no record at all."""
    for name, log in built.copied.items():

        def byte_kinds(runs: list[tuple[int, int, str]]) -> dict[int, str]:
            return {b: kind for start, n, kind in runs for b in range(start, start + n)}

        records = reader.records(name)
        names = {0: "data", spec.FLAG_ZERO: "zero", spec.FLAG_UNREADABLE: "unreadable"}
        found = byte_kinds([(r.offset, r.length, names[r.flags]) for r in records])
        assert found == byte_kinds(log)
        entry = reader.region(name)
        assert entry.stats.unreadable_bytes == sum(n for _, n, k in log if k == "unreadable")
    listed = {(u.region, u.offset, u.length) for u in reader.manifest.unreadable}
    assert sum(n for _, _, n in listed) == reader.manifest.totals.unreadable_bytes


def test_packs_stay_under_the_limit_and_match_the_manifest(
    built: Built, reader: ImageReader
) -> None:
    packs = sorted((built.path / "packs").iterdir())
    assert len(packs) > 5
    assert [p.name for p in packs] == [p.name for p in reader.manifest.packs]
    assert all(p.stat().st_size <= PACK_LIMIT for p in packs)
    assert sum(p.stat().st_size for p in packs) == (
        reader.manifest.totals.stored_bytes + spec.PACK_HEADER.size * len(packs)
    )


def test_incompressible_chunks_are_stored_raw(built: Built, reader: ImageReader) -> None:
    codecs = set()
    for name in built.truth:
        for rec in reader.records(name):
            if rec.flags:
                continue
            codecs.add(rec.codec)
            if rec.codec == spec.CODEC_STORED:
                assert rec.stored_length == rec.length
            else:
                assert rec.stored_length <= rec.length - rec.length // 32
    assert codecs == {spec.CODEC_STORED, spec.CODEC_LZ4}


def test_verify_finds_nothing_wrong(reader: ImageReader) -> None:
    seen: list[tuple[int, int]] = []
    report = reader.verify(lambda done, total: seen.append((done, total)))
    assert report.ok, report.problems
    assert report.frames == sum(p.frames for p in reader.manifest.packs)
    assert seen and seen[-1][0] == seen[-1][1] == report.stored_bytes


def test_duplicates_are_stored_once(tmp_path: Path) -> None:
    chunk = random.Random(1).randbytes(CHUNK)
    with ImageWriter(tmp_path / "img", chunk_size=CHUNK) as w:
        for name in ("a", "b"):
            w.begin_region(name, "partition", 0, 50 * CHUNK)
            for i in range(50):
                w.add_chunk(i * CHUNK, chunk)
            w.end_region()
        manifest = w.finish()
    (pack,) = (tmp_path / "img" / "packs").iterdir()
    assert pack.stat().st_size == spec.PACK_HEADER.size + spec.FRAME_HEADER.size + CHUNK
    assert manifest.totals.dedup_bytes == 99 * CHUNK
    with ImageReader(tmp_path / "img") as r:
        assert r.read_at("b", 0, 50 * CHUNK) == chunk * 50
        assert {(rec.pack, rec.pack_offset) for rec in r.records("b")} == {(0, 32)}


def test_dedup_can_be_turned_off(tmp_path: Path) -> None:
    with ImageWriter(tmp_path / "img", chunk_size=CHUNK, dedup=False) as w:
        w.begin_region("a", "partition", 0, 3 * CHUNK)
        w.add_chunk(0, b"\x01" * (3 * CHUNK))
        w.end_region()
        assert w.finish().totals.frames == 3


def test_zero_chunks_take_no_pack_space(tmp_path: Path) -> None:
    with ImageWriter(tmp_path / "img", chunk_size=CHUNK) as w:
        w.begin_region("z", "partition", 0, 100 * CHUNK)
        for i in range(100):
            w.add_chunk(i * CHUNK, bytes(CHUNK))
        w.end_region()
        manifest = w.finish()
    assert manifest.packs == ()
    assert not any((tmp_path / "img" / "packs").iterdir())
    with ImageReader(tmp_path / "img") as r:
        (rec,) = r.records("z")  # merged into one run
        assert (rec.offset, rec.length, rec.flags) == (0, 100 * CHUNK, spec.FLAG_ZERO)
        assert r.read_at("z", 5, 3 * CHUNK) == bytes(3 * CHUNK)
        assert r.verify().ok


def test_default_sizes_write_one_pack(tmp_path: Path) -> None:
    data = words(random.Random(3), 9 << 20)
    with ImageWriter(tmp_path / "img") as w:
        w.begin_region("p1", "partition", 0, len(data))
        w.add_chunk(0, data)
        w.end_region()
        manifest = w.finish()
    assert manifest.chunk_size == 4 << 20 and len(manifest.packs) == 1
    assert manifest.totals.frames == 3
    with ImageReader(tmp_path / "img") as r:
        assert r.read_at("p1", (4 << 20) - 10, 20) == data[(4 << 20) - 10 : (4 << 20) + 10]


def test_same_digest_with_another_payload_is_not_deduplicated(tmp_path: Path) -> None:
    """Dedup compares payloads: equal hash and length but other stored bytes -> a second frame."""
    data = b"abcd" * 1024
    stored = codec.EncodedChunk(spec.CODEC_STORED, data, codec.digest(data), False)
    with ImageWriter(tmp_path / "img", chunk_size=CHUNK) as w:
        w.begin_region("a", "partition", 0, 2 * CHUNK)
        w.add_encoded(0, CHUNK, stored)
        w.add_encoded(CHUNK, CHUNK, codec.encode_chunk(data))  # lz4 payload, same digest
        w.end_region()
        manifest = w.finish()
    assert (manifest.totals.frames, manifest.totals.dedup_bytes) == (2, 0)
    with ImageReader(tmp_path / "img") as r:
        assert r.read_at("a", 0, 2 * CHUNK) == data * 2
        assert [rec.codec for rec in r.records("a")] == [spec.CODEC_STORED, spec.CODEC_LZ4]
