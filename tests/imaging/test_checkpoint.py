"""Checkpoints of an unfinished image: a writer stopped at any point after a checkpoint (with
frames, records, packs and index files written past it) resumes and ends with the very image an
uninterrupted writer makes: the same packs byte for byte, the same index files, the same
manifest apart from its creation time."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from clonebay.errors import UsageError
from clonebay.imaging import checkpoint, spec
from clonebay.imaging.writer import ImageWriter

CHUNK = 4096
IMAGE_ID = bytes(range(16))
# (region, size, chunks): each chunk random, a repeat of an earlier one (dedup), or zeros
REGIONS = [("p1", 40 * CHUNK), ("p2", 30 * CHUNK), ("p3", 20 * CHUNK)]


def _chunks(seed: int) -> list[tuple[str, int, bytes | None]]:
    """Every chunk of every region: data, or None for an unreadable chunk."""
    rng = random.Random(seed)
    seen: list[bytes] = []
    out: list[tuple[str, int, bytes | None]] = []
    for name, size in REGIONS:
        for offset in range(0, size, CHUNK):
            kind = rng.random()
            if kind < 0.2 and seen:
                data: bytes | None = rng.choice(seen)
            elif kind < 0.35:
                data = bytes(CHUNK)
            elif kind < 0.42:
                data = None
            else:
                data = rng.randbytes(CHUNK // 2) * 2  # compressible a little
                seen.append(data)
            out.append((name, offset, data))
    return out


def _write(writer: ImageWriter, chunks: list[tuple[str, int, bytes | None]], start: int,
           stop: int, every: int | None = None) -> None:  # fmt: skip
    """Add chunks[start:stop], opening and closing regions as they change; a checkpoint after
    every ``every`` chunks (and at each region's end)."""
    for i in range(start, stop):
        name, offset, data = chunks[i]
        open_name = writer._region.name if writer._region else None
        if open_name != name:
            if open_name is not None:
                writer.end_region()
            size = dict(REGIONS)[name]
            writer.begin_region(name, "partition", 0, size)
        if data is None:
            writer.add_unreadable(offset, CHUNK)
        else:
            writer.add_chunk(offset, data)
        if every and (i + 1) % every == 0:
            writer.checkpoint({"next": i + 1})


def _finish(writer: ImageWriter) -> None:
    if writer._region is not None:
        writer.end_region()
    writer.finish(created="2026-12-05T00:00:00Z")


def _files(image: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(image.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == spec.MANIFEST_NAME:
                data = json.dumps({k: v for k, v in json.loads(data).items()
                                   if k != "checksum"}, sort_keys=True).encode()  # fmt: skip
            out[str(path.relative_to(image))] = data
    return out


@pytest.mark.parametrize("seed", range(6))
def test_a_writer_stopped_after_any_checkpoint_resumes_to_the_same_image(
    tmp_path: Path, seed: int
) -> None:
    chunks = _chunks(seed)
    limit = spec.PACK_HEADER.size + 12 * (spec.FRAME_HEADER.size + CHUNK)  # several packs
    whole = ImageWriter(tmp_path / "whole", chunk_size=CHUNK, pack_limit=limit, image_id=IMAGE_ID)
    _write(whole, chunks, 0, len(chunks))
    _finish(whole)

    rng = random.Random(seed)
    every = rng.choice([3, 7, 11])
    stop_at = rng.randrange(every + 1, len(chunks))  # a stop after at least one checkpoint
    image = tmp_path / "cut"
    first = ImageWriter(image, chunk_size=CHUNK, pack_limit=limit, image_id=IMAGE_ID)
    _write(first, chunks, 0, stop_at, every)
    first.abort()  # a kill: frames staged or written past the checkpoint, maybe a region closed
    assert not (image / spec.MANIFEST_NAME).exists()

    again = ImageWriter.resume(image)
    assert again.resumed is not None
    resume_at = int(again.resumed.job["next"])
    assert resume_at == stop_at // every * every
    _write(again, chunks, resume_at, len(chunks))
    _finish(again)
    assert not (image / spec.RESUME_DIR).exists()
    assert _files(image) == _files(tmp_path / "whole")


def test_a_resume_twice_in_a_row_still_gives_the_same_image(tmp_path: Path) -> None:
    chunks = _chunks(42)
    whole = ImageWriter(tmp_path / "whole", chunk_size=CHUNK, image_id=IMAGE_ID)
    _write(whole, chunks, 0, len(chunks))
    _finish(whole)
    image = tmp_path / "cut"
    writer = ImageWriter(image, chunk_size=CHUNK, image_id=IMAGE_ID)
    _write(writer, chunks, 0, 25, 5)
    writer.abort()
    writer = ImageWriter.resume(image)
    _write(writer, chunks, 25, 61, 6)
    writer.abort()
    writer = ImageWriter.resume(image)
    assert writer.resumed is not None and writer.resumed.job["next"] == 60
    _write(writer, chunks, 60, len(chunks))
    _finish(writer)
    assert _files(image) == _files(tmp_path / "whole")


def test_no_checkpoint_and_damaged_checkpoints_are_refused(tmp_path: Path) -> None:
    image = tmp_path / "img"
    writer = ImageWriter(image, chunk_size=CHUNK, image_id=IMAGE_ID)
    writer.begin_region("p1", "partition", 0, 8 * CHUNK)
    writer.add_chunk(0, b"a" * CHUNK)
    writer.abort()
    with pytest.raises(UsageError, match="no checkpoint to resume from"):
        ImageWriter.resume(image)

    writer = ImageWriter(tmp_path / "two", chunk_size=CHUNK, image_id=IMAGE_ID)
    writer.begin_region("p1", "partition", 0, 8 * CHUNK)
    writer.add_chunk(0, b"a" * CHUNK)
    writer.add_chunk(CHUNK, b"b" * CHUNK)
    writer.checkpoint({})
    writer.abort()
    records = checkpoint.records_file(tmp_path / "two", "p1")
    good = records.read_bytes()
    records.write_bytes(good[: spec.RECORD.size])  # the records the checkpoint counts are gone
    with pytest.raises(spec.ImageError, match="records the checkpoint counts"):
        ImageWriter.resume(tmp_path / "two")
    records.write_bytes(good)
    pack = tmp_path / "two" / spec.PACKS_DIR / spec.pack_name(0)
    pack.write_bytes(pack.read_bytes()[:100])  # the pack lost durable frames: records point out
    state = tmp_path / "two" / spec.RESUME_DIR / checkpoint.STATE
    body = json.loads(state.read_bytes())
    body["pack_length"] = 100
    state.write_text(json.dumps(body))
    with pytest.raises(spec.ImageError, match="outside the pack"):
        ImageWriter.resume(tmp_path / "two")
    state.write_text("{not json")
    with pytest.raises(spec.ImageError, match="not JSON"):
        ImageWriter.resume(tmp_path / "two")
