"""Index revisions (docs/format.md §11), without FUSE: changed ranges become new frames in new
packs and a REGION.rN.idx; frames widen to whole records; unchanged pieces keep their frames;
superseded frames still pass verify; a damaged superseded area does not; an interrupted commit
leaves the old image readable and its leftovers are cleared by the next commit; the copy-on-write
overlay reads back what was written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from clonebay.browse.cow import Overlay
from clonebay.browse.cow import commit as commit_edit
from clonebay.imaging import spec
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.revise import ImageReviser
from clonebay.imaging.writer import ImageWriter

CHUNK = 4096


def make_image(path: Path) -> bytes:
    """Region p1: 6 chunks of random bytes, a zero chunk, then 1 uncovered chunk."""
    rng = random.Random(1)
    data = rng.randbytes(6 * CHUNK) + bytes(CHUNK)
    with ImageWriter(path, chunk_size=CHUNK, pack_limit=3 * CHUNK + 200) as w:
        w.begin_region("p1", "partition", 0, 8 * CHUNK)
        w.add_chunk(0, data)
        w.end_region()
        w.finish()
    return data + bytes(CHUNK)


def test_revision_replaces_ranges_and_keeps_the_rest(tmp_path: Path) -> None:
    image = tmp_path / "img"
    content = bytearray(make_image(image))
    old_packs = {p.name: p.read_bytes() for p in (image / "packs").iterdir()}
    content[CHUNK + 10 : CHUNK + 20] = b"X" * 10  # inside chunk 1
    content[7 * CHUNK + 5 : 7 * CHUNK + 9] = b"new!"  # uncovered space becomes covered
    content[3 * CHUNK : 4 * CHUNK] = bytes(CHUNK)  # a chunk zeroed
    reviser = ImageReviser(image)
    ranges = [(CHUNK + 10, CHUNK + 20), (7 * CHUNK + 5, 7 * CHUNK + 9), (3 * CHUNK, 4 * CHUNK)]
    reviser.replace("p1", ranges, lambda off, n: bytes(content[off : off + n]))
    manifest = reviser.commit("test")
    assert manifest is not None and manifest.revision == 1
    assert manifest.requires == ("index-revisions",)
    assert {p.name: p.read_bytes() for p in (image / "packs").iterdir() if p.name in old_packs} == (
        old_packs
    ), "old packs must not change"
    assert sorted(p.name for p in (image / "index").iterdir()) == ["p1.r1.idx"]
    with ImageReader(image) as reader:
        assert reader.read_at("p1", 0, 8 * CHUNK) == bytes(content)
        records = reader.records("p1")
        assert [r.flags for r in records if r.offset == 3 * CHUNK] == [spec.FLAG_ZERO]
        assert reader.verify().ok
        new_frames = [r for r in records if not r.flags and r.pack >= len(old_packs)]
        assert sorted(r.offset for r in new_frames) == [CHUNK, 7 * CHUNK + 5]  # widened: 1
    body = json.loads((image / "manifest.json").read_text())
    assert body["revisions"][0]["regions"] == ["p1"]


def test_damage_among_superseded_frames_is_reported(tmp_path: Path) -> None:
    image = tmp_path / "img"
    content = make_image(image)
    reviser = ImageReviser(image)
    reviser.replace("p1", [(0, CHUNK)], lambda off, n: b"Y" * n)
    reviser.commit()
    pack = image / "packs" / "000000.pack"
    raw = bytearray(pack.read_bytes())
    raw[spec.PACK_HEADER.size] ^= 0xFF  # the superseded first frame's magic
    pack.write_bytes(bytes(raw))
    with ImageReader(image) as reader:
        assert reader.read_at("p1", CHUNK, CHUNK) == content[CHUNK : 2 * CHUNK]
        problems = [str(p) for p in reader.verify().problems]
    assert any("superseded frame at pack offset 32" in p for p in problems), problems


def test_interrupted_commit_leaves_the_old_image_and_is_cleared_later(tmp_path: Path) -> None:
    image = tmp_path / "img"
    content = make_image(image)
    before = (image / "manifest.json").read_bytes()
    (image / "packs" / "000009.pack").write_bytes(b"torn")  # as a crash before the rename
    (image / "index" / "p1.r1.idx").write_bytes(b"torn")
    with ImageReader(image) as reader:
        assert reader.read_at("p1", 0, 8 * CHUNK) == content
    new = b"Z" * 10 + content[10:]
    reviser = ImageReviser(image)
    reviser.replace("p1", [(0, 10)], lambda off, n: new[off : off + n])  # widened to a frame
    reviser.commit()
    assert not (image / "packs" / "000009.pack").exists()
    assert (image / "manifest.json").read_bytes() != before
    with ImageReader(image) as reader:
        assert reader.read_at("p1", 0, 12) == b"Z" * 10 + content[10:12]
        assert reader.verify().ok


def test_overlay_copy_on_write_and_commit(tmp_path: Path) -> None:
    image = tmp_path / "img"
    content = bytearray(make_image(image))
    before = {p: p.read_bytes() for p in image.rglob("*") if p.is_file()}
    scratch = tmp_path / "scratch"
    with ImageReader(image) as reader:
        overlay = Overlay(reader, scratch)
        overlay.write("p1", CHUNK - 2, b"abcd")  # straddles chunks 0 and 1
        content[CHUNK - 2 : CHUNK + 2] = b"abcd"
        assert overlay.read("p1", 0, 8 * CHUNK) == bytes(content)
        assert overlay.dirty_ranges("p1") == [(0, CHUNK), (CHUNK, 2 * CHUNK)]
        with pytest.raises(OSError):
            overlay.write("p1", 8 * CHUNK - 1, b"xy")
        overlay.flush()
        overlay.close()
    assert {p: p.read_bytes() for p in image.rglob("*") if p.is_file()} == before
    commit_edit(image, scratch)
    with ImageReader(image) as reader:
        assert reader.read_at("p1", 0, 8 * CHUNK) == bytes(content)
        assert reader.verify().ok
