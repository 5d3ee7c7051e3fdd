"""Damaged, incomplete and foreign images: every one is refused with a message that names the
file, the region and the region offset, and none ever yields wrong bytes silently."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clonebay.errors import InputError
from clonebay.imaging import spec
from clonebay.imaging.manifest import canonical
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.source_disk import SourceInfo
from clonebay.imaging.spec import ImageError, IncompleteImageError, NewerFormatError, Record
from clonebay.imaging.writer import ImageWriter

CHUNK = 4096


@dataclass
class Pristine:
    path: Path
    truth: dict[str, bytes]


def make_image(path: Path, seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    text = b"".join(rnd.choice([b"alpha ", b"beta ", b"\n", b"gamma "]) for _ in range(20_000))
    noise = rnd.randbytes(CHUNK)
    truth = {
        "p1": text[: 3 * CHUNK] + noise + bytes(CHUNK) + noise + text[:1000],
        "gap": rnd.randbytes(1500) + bytes(600) + text[5000:9000],
    }
    with ImageWriter(path, chunk_size=CHUNK, pack_limit=10_000) as w:
        for name, data in truth.items():
            w.begin_region(name, "partition" if name == "p1" else "raw-area", 512, len(data))
            w.add_chunk(0, data)
            w.end_region()
        w.finish(source=SourceInfo(model="M"))
    return truth


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    path = tmp_path_factory.mktemp("pristine") / "image"
    return Pristine(path, make_image(path, seed=3))


@pytest.fixture
def image(pristine: Pristine, tmp_path: Path) -> Path:
    shutil.copytree(pristine.path, tmp_path / "image")
    return tmp_path / "image"


def frame_record(image: Path, region: str, codec: int) -> Record:
    with ImageReader(image) as r:
        return next(rec for rec in r.records(region) if not rec.flags and rec.codec == codec)


def pack_path(image: Path, rec: Record) -> Path:
    return image / "packs" / spec.pack_name(rec.pack)


def flip(path: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(data)


def rewrite_manifest(image: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit manifest.json as a consistent (correctly checksummed) writer would have written it."""
    path = image / "manifest.json"
    body = json.loads(path.read_text())
    del body["checksum"]
    edit(body)
    body["checksum"] = "xxh3-128:" + xxhash.xxh3_128_hexdigest(canonical(body))
    path.write_text(json.dumps(body, indent=2))


def names_place(message: str, file: Path, region: str, offset: int) -> bool:
    return str(file) in message and f"region {region}" in message and f"offset {offset}" in message


def test_flipped_payload_bit_is_found_by_read_and_by_verify(
    image: Path, pristine: Pristine
) -> None:
    for codec in (spec.CODEC_LZ4, spec.CODEC_STORED):
        rec = frame_record(image, "p1", codec)
        pack = pack_path(image, rec)
        flip(pack, rec.pack_offset + spec.FRAME_HEADER.size + rec.stored_length // 2)
        with ImageReader(image) as r:
            with pytest.raises(ImageError, match=r"xxh3-128|lz4") as caught:
                r.read_at("p1", rec.offset + 1, 10)
            assert names_place(str(caught.value), pack, "p1", rec.offset)
            report = r.verify()
            assert not report.ok
            assert any(
                (p.file, p.region, p.offset) == (str(pack), "p1", rec.offset)
                for p in report.problems
            )
            assert r.read_at("gap", 0, 100) == pristine.truth["gap"][:100]


def test_noise_chunk_shared_by_two_records_reports_both(image: Path) -> None:
    rec = frame_record(image, "p1", spec.CODEC_STORED)  # the noise chunk, stored twice by reference
    flip(pack_path(image, rec), rec.pack_offset + spec.FRAME_HEADER.size)
    with ImageReader(image) as r:
        users = [x.offset for x in r.records("p1") if (x.pack, x.pack_offset) == rec[2:4]]
        assert len(users) == 2
        problems = r.verify().problems
    assert sorted(p.offset for p in problems if p.region == "p1") == users
    assert "damaged frame" in problems[-1].message


@pytest.mark.parametrize("byte", range(spec.FRAME_HEADER.size))
def test_any_flipped_frame_header_byte_is_refused(image: Path, byte: int) -> None:
    rec = frame_record(image, "p1", spec.CODEC_LZ4)
    flip(pack_path(image, rec), rec.pack_offset + byte, 0x01)
    with ImageReader(image) as r:
        with pytest.raises(ImageError) as caught:
            r.read_at("p1", rec.offset, 1)
        assert names_place(str(caught.value), pack_path(image, rec), "p1", rec.offset)
        assert len(r.verify().problems) == 1


def test_truncated_pack_is_refused_at_open(image: Path) -> None:
    last = sorted((image / "packs").iterdir())[-1]
    os.truncate(last, last.stat().st_size - 1)
    with pytest.raises(ImageError, match=r"pack truncated: \d+ bytes, manifest says \d+") as caught:
        ImageReader(image)
    assert str(last) in str(caught.value)


def test_pack_truncated_while_open_is_reported_by_read_and_verify(image: Path) -> None:
    rec = frame_record(image, "p1", spec.CODEC_LZ4)
    with ImageReader(image) as r:
        os.truncate(pack_path(image, rec), rec.pack_offset + 10)
        with pytest.raises(ImageError, match="pack truncated") as caught:
            r.read_at("p1", rec.offset, CHUNK)
        assert names_place(str(caught.value), pack_path(image, rec), "p1", rec.offset)
        assert any(p.offset == rec.offset for p in r.verify().problems)


def test_flipped_pack_header_byte_is_refused(image: Path) -> None:
    for byte in range(spec.PACK_HEADER.size):
        copy = image.parent / f"copy{byte}"
        shutil.copytree(image, copy)
        flip(copy / "packs" / "000001.pack", byte, 0x01)
        with pytest.raises(ImageError, match=r"000001\.pack"):
            ImageReader(copy)


def test_missing_index_names_the_file_and_region(image: Path) -> None:
    (image / "index" / "gap.idx").unlink()
    with pytest.raises(ImageError, match=r"gap\.idx, region gap: index file missing"):
        ImageReader(image)


def test_index_hash_mismatch(image: Path) -> None:
    flip(image / "index" / "p1.idx", spec.INDEX_HEADER.size + 3)
    with pytest.raises(ImageError, match=r"p1\.idx, region p1: index xxh3-128 is \w+, manifest"):
        ImageReader(image)


def test_missing_manifest_means_incomplete(image: Path, tmp_path: Path) -> None:
    (image / "manifest.json").unlink()
    with pytest.raises(IncompleteImageError, match=r"incomplete image: no manifest\.json"):
        ImageReader(image)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="not a clonebay image"):
        ImageReader(tmp_path / "empty")
    with pytest.raises(ImageError, match="not an image directory"):
        ImageReader(tmp_path / "nothing")


@pytest.mark.parametrize("checksummed", [True, False])
def test_format_version_2_is_from_a_newer_clonebay(image: Path, checksummed: bool) -> None:
    if checksummed:
        rewrite_manifest(image, lambda m: m.update(format_version=2))
    else:
        path = image / "manifest.json"
        path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 2'))
    with pytest.raises(NewerFormatError) as caught:
        ImageReader(image)
    assert "made by a newer clonebay (format 2); this one reads up to 1" in str(caught.value)
    assert str(image / "manifest.json") in str(caught.value)


def test_required_feature_unknown_is_from_a_newer_clonebay(image: Path) -> None:
    rewrite_manifest(image, lambda m: m.update(requires=["zstd-frames"]))
    with pytest.raises(NewerFormatError, match="zstd-frames"):
        ImageReader(image)


def test_edited_manifest_fails_its_checksum(image: Path) -> None:
    path = image / "manifest.json"
    path.write_text(path.read_text().replace('"disk_offset": 512', '"disk_offset": 1512', 1))
    with pytest.raises(ImageError, match="manifest checksum mismatch"):
        ImageReader(image)


def test_manifest_that_does_not_match_its_packs(image: Path) -> None:
    first = image.parent / "first"
    shutil.copytree(image, first)
    rewrite_manifest(first, lambda m: m["packs"][0].update(size=m["packs"][0]["size"] + 100))
    with pytest.raises(ImageError, match=r"000000\.pack: pack truncated"):
        ImageReader(first)
    last = sorted((image / "packs").iterdir())[-1]
    last.unlink()
    with pytest.raises(ImageError, match="pack missing") as caught:
        ImageReader(image)
    assert str(last) in str(caught.value)


def test_manifest_listing_fewer_packs_than_the_index_uses(image: Path) -> None:
    rewrite_manifest(image, lambda m: m.update(packs=m["packs"][:1]))
    with pytest.raises(ImageError, match=r"region \w+, offset \d+: pack 1 does not exist"):
        ImageReader(image)


def test_pack_from_another_image_is_refused(image: Path, tmp_path: Path) -> None:
    make_image(tmp_path / "other", seed=3)  # same content, another image id
    shutil.copy(tmp_path / "other" / "packs" / "000001.pack", image / "packs" / "000001.pack")
    with pytest.raises(ImageError, match=r"000001\.pack: pack header says pack 1 of image"):
        ImageReader(image)


def test_index_of_another_region_is_refused(image: Path) -> None:
    shutil.copy(image / "index" / "gap.idx", image / "index" / "p1.idx")
    data = (image / "index" / "p1.idx").read_bytes()

    def point_at_copy(m: dict[str, Any]) -> None:
        m["regions"][0]["index"].update(size=len(data), xxh3=xxhash.xxh3_128_hexdigest(data))

    rewrite_manifest(image, point_at_copy)
    with pytest.raises(ImageError, match=r"p1\.idx, region p1: index header"):
        ImageReader(image)


def test_unknown_codec_in_a_consistent_index_is_refused(image: Path) -> None:
    path = image / "index" / "p1.idx"
    data = bytearray(path.read_bytes())
    data[spec.INDEX_HEADER.size + 28] = 7  # codec byte of the first record
    path.write_bytes(data)

    def rehash(m: dict[str, Any]) -> None:
        m["regions"][0]["index"]["xxh3"] = xxhash.xxh3_128_hexdigest(bytes(data))

    rewrite_manifest(image, rehash)
    with pytest.raises(ImageError, match=r"p1\.idx, region p1, offset 0: codec id 7 unknown"):
        ImageReader(image)


def image_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_damage_is_caught_or_harmless(pristine: Pristine, data: st.DataObject) -> None:
    """Mutate bytes of any file: the reader raises InputError or returns the right bytes, and
    verify reports a problem whenever a read failed."""
    files = image_files(pristine.path)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "image"
        shutil.copytree(pristine.path, copy)
        victim = copy / data.draw(st.sampled_from(files)).relative_to(pristine.path)
        blob = bytearray(victim.read_bytes())
        action = data.draw(st.sampled_from(["xor", "xor", "xor", "truncate", "append"]))
        if action == "xor":
            for _ in range(data.draw(st.integers(1, 3))):
                blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
        elif action == "truncate":
            del blob[data.draw(st.integers(0, len(blob) - 1)) :]
        else:
            blob += data.draw(st.binary(min_size=1, max_size=64))
        victim.write_bytes(blob)
        try:
            reader = ImageReader(copy)
        except InputError:
            return
        with reader:
            failed = False
            for name, truth in pristine.truth.items():
                try:
                    assert reader.read_at(name, 0, len(truth)) == truth
                    assert b"".join(c for _, c in reader.iter_chunks(name, include_zeros=True))
                except InputError:
                    failed = True
            report = reader.verify()
            assert report.ok == (not failed), report.problems
