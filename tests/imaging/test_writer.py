"""The writer's rules: where it may write, what it refuses, and what an interrupted save leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clonebay.errors import SafetyError, UsageError
from clonebay.imaging import codec, spec
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.source_disk import SourceInfo
from clonebay.imaging.writer import ImageWriter

CHUNK = 4096


def small_image(path: Path, fill: bytes = b"a", **args: bool) -> None:
    with ImageWriter(path, chunk_size=CHUNK, **args) as w:
        w.begin_region("p1", "partition", 0, 2 * CHUNK)
        w.add_chunk(0, fill * (2 * CHUNK))
        w.end_region()
        w.finish()


def test_manifest_is_written_last_and_abort_leaves_an_incomplete_image(tmp_path: Path) -> None:
    w = ImageWriter(tmp_path / "img", chunk_size=CHUNK)
    w.begin_region("p1", "partition", 0, CHUNK)
    w.add_chunk(0, b"x" * CHUNK)
    w.end_region()
    assert (tmp_path / "img" / "index" / "p1.idx").exists()
    assert not (tmp_path / "img" / "manifest.json").exists()
    w.abort()
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["index", "packs"]
    with pytest.raises(spec.IncompleteImageError, match=r"incomplete image: no manifest\.json"):
        ImageReader(tmp_path / "img")


def test_an_exception_inside_the_with_block_aborts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ImageWriter(tmp_path / "img", chunk_size=CHUNK) as w:
        w.begin_region("p1", "partition", 0, CHUNK)
        raise RuntimeError("reader thread failed")
    assert not (tmp_path / "img" / "manifest.json").exists()


def test_refuses_to_overwrite_an_image_unless_asked(tmp_path: Path) -> None:
    small_image(tmp_path / "img", b"a")
    with pytest.raises(SafetyError, match="already holds an image"):
        small_image(tmp_path / "img", b"b")
    small_image(tmp_path / "img", b"b", overwrite=True)
    with ImageReader(tmp_path / "img") as r:
        assert r.read_at("p1", 0, 3) == b"bbb"


def test_refuses_an_incomplete_image_and_foreign_files(tmp_path: Path) -> None:
    ImageWriter(tmp_path / "img", chunk_size=CHUNK).abort()
    with pytest.raises(SafetyError, match="incomplete image"):
        small_image(tmp_path / "img")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.odt").write_bytes(b"precious")
    with pytest.raises(SafetyError, match="not part of a clonebay image"):
        small_image(tmp_path / "docs", overwrite=True)
    assert (tmp_path / "docs" / "thesis.odt").read_bytes() == b"precious"
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UsageError, match="not a directory"):
        small_image(tmp_path / "file")


def test_an_empty_existing_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    small_image(tmp_path / "img")
    assert (tmp_path / "img" / "manifest.json").exists()


def test_api_misuse_is_refused(tmp_path: Path) -> None:
    with ImageWriter(tmp_path / "img", chunk_size=CHUNK) as w:
        with pytest.raises(ValueError, match="region name"):
            w.begin_region("../etc", "partition", 0, 10)
        with pytest.raises(ValueError, match="kind"):
            w.begin_region("p1", "lvm", 0, 10)
        with pytest.raises(ValueError, match="no open region"):
            w.add_chunk(0, b"x")
        w.begin_region("p1", "partition", 0, 3 * CHUNK)
        with pytest.raises(ValueError, match="still open"):
            w.begin_region("p2", "partition", 0, 10)
        w.add_chunk(CHUNK, b"x" * 10)
        with pytest.raises(ValueError, match="out of order"):
            w.add_chunk(0, b"x")
        with pytest.raises(ValueError, match="past"):
            w.add_chunk(3 * CHUNK - 1, b"xx")
        with pytest.raises(ValueError, match="still open"):
            w.finish()
        bad = codec.EncodedChunk(spec.CODEC_STORED, b"x" * 5, codec.digest(b"x" * 6), False)
        with pytest.raises(ValueError, match="stored chunk"):
            w.add_encoded(2 * CHUNK, 6, bad)
        with pytest.raises(ValueError, match="larger than chunk_size"):
            w.add_encoded(0, CHUNK + 1, codec.encode_chunk(b"y" * (CHUNK + 1)))
        w.end_region()
        with pytest.raises(ValueError, match="already written"):
            w.begin_region("p1", "partition", 0, 10)
        with pytest.raises(ValueError, match="floats"):
            w.finish(source=SourceInfo(size=1.5))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"source\.logical_sector_size: must be a power"):
            w.finish(source=SourceInfo(logical_sector_size=1000))
        manifest = w.finish(source=SourceInfo(size=1))
        assert manifest.source == SourceInfo(size=1)
        with pytest.raises(ValueError, match="finished"):
            w.begin_region("p2", "partition", 0, 10)


def test_writer_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        ImageWriter(tmp_path / "a", chunk_size=100)
    with pytest.raises(ValueError, match="pack_limit"):
        ImageWriter(tmp_path / "a", pack_limit=1 << 32)
    with pytest.raises(ValueError, match="pack_limit"):
        ImageWriter(tmp_path / "a", chunk_size=CHUNK, pack_limit=CHUNK)
    with pytest.raises(ValueError, match="codec"):
        ImageWriter(tmp_path / "a", codec="zstd")


def test_manifest_records_what_the_caller_said(tmp_path: Path) -> None:
    with ImageWriter(tmp_path / "img", chunk_size=CHUNK) as w:
        w.begin_region(
            "sda1", "partition", 1 << 20, 4 * CHUNK, copy="native", fstype="ntfs", label="Windows",
            uuid="0123", state="dirty", used_bytes=CHUNK, notes=["dirty flag set"],
            partition=1,
        )  # fmt: skip
        w.add_chunk(0, b"\x01" * CHUNK)
        w.end_region()
        w.finish(source=SourceInfo(model="WDC", serial="X1"), warnings=["w"])
    data = json.loads((tmp_path / "img" / "manifest.json").read_text())
    assert data["format"] == "clonebay-image" and data["format_version"] == 1
    assert data["created"].endswith("Z") and data["hash"] == "xxh3-128"
    (region,) = data["regions"]
    assert region["disk_offset"] == 1 << 20 and region["label"] == "Windows"
    assert region["index"]["file"] == "sda1.idx" and region["extra"] == {"partition": 1}
    with ImageReader(tmp_path / "img") as r:
        entry = r.region("sda1")
        assert (entry.fstype, entry.state, entry.copy, entry.used_bytes) == (
            "ntfs", "dirty", "native", CHUNK,
        )  # fmt: skip
        assert entry.notes == ("dirty flag set",)
        assert r.manifest.warnings == ("w",)
        assert r.manifest.source.serial == "X1" and entry.partition == 1
