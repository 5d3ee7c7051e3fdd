"""The restore's frame stream (imaging/frame_stream.py) against ImageReader.read_at as the
oracle: the same bytes for frames asked in any order (dedup references back, many packs, frames
used twice), the same ImageError text for a damaged frame, few large reads for frames that lie in
pack order, a bounded queue, errors and cancel reaching the caller, and the reader's browsing
cache and counters never touched."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest

from clonebay.errors import CancelledError
from clonebay.imaging import frame_stream, spec
from clonebay.imaging.frame_stream import FrameStream, plan_reads, region_frames
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.source_disk import SourceInfo, TableInfo
from clonebay.imaging.spec import ImageError, Record
from clonebay.imaging.writer import ImageWriter

CHUNK = 64 << 10
PACK_LIMIT = 512 << 10  # at most 7 random frames per pack: many packs


def text(rnd: random.Random, n: int) -> bytes:
    words = [b"inode ", b"extent ", b"journal ", b"superblock\n", b"\0\0\0\0"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words)
    return bytes(out[:n])


def build(path: Path, seed: int = 5) -> Path:
    """p1: 40 chunks in order (random and text, a zero run, an unreadable run); p2: chunks of
    p1 again in shuffled order (dedup records pointing back into earlier packs) between new
    ones; p3: one frame used by every record."""
    rnd = random.Random(seed)
    chunks = [rnd.randbytes(CHUNK) if i % 3 else text(rnd, CHUNK) for i in range(40)]
    with ImageWriter(path, chunk_size=CHUNK, pack_limit=PACK_LIMIT) as w:
        w.begin_region("p1", "partition", 1 << 20, 48 * CHUNK)
        for i, chunk in enumerate(chunks):
            w.add_chunk(i * CHUNK, chunk)
        w.add_zero(40 * CHUNK, 3 * CHUNK)
        w.add_unreadable(43 * CHUNK, CHUNK)
        w.end_region()
        w.begin_region("p2", "partition", 64 << 20, 60 * CHUNK)
        order = list(range(40)) * 2
        rnd.shuffle(order)
        for n, i in enumerate(order[:50]):
            w.add_chunk(n * CHUNK, chunks[i] if n % 5 else text(rnd, CHUNK))
        w.end_region()
        w.begin_region("p3", "partition", 128 << 20, 8 * CHUNK)
        for n in range(8):
            w.add_chunk(n * CHUNK, chunks[7])
        w.end_region()
        w.finish(source=SourceInfo(model="test disk", size=1 << 30), table=TableInfo("gpt"))
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("frames") / "image")


def plan_of(reader: ImageReader) -> list[tuple[str, list[Record]]]:
    return [(r.name, list(reader.records(r.name))) for r in reader.regions]


def frames_of(reader: ImageReader) -> list[tuple[str, Record]]:
    return [(name, rec) for name, recs in plan_of(reader) for rec in recs if not rec.flags]


def paths_of(reader: ImageReader) -> list[str]:
    return [reader.pack_path(n) for n in range(len(reader.manifest.packs))]


def test_the_test_image_has_records_out_of_pack_order(pristine: Path) -> None:
    with ImageReader(pristine) as reader:
        spots = [(rec.pack, rec.pack_offset) for _, rec in frames_of(reader)]
        assert len(reader.manifest.packs) > 3
    assert any(b < a for a, b in itertools.pairwise(spots))  # a reference back
    assert len(set(spots)) < len(spots)  # frames used more than once


def test_region_frames_give_read_at_bytes_and_leave_the_reader_alone(pristine: Path) -> None:
    with ImageReader(pristine) as reader, ImageReader(pristine) as oracle:
        plan = plan_of(reader)
        got = list(region_frames(reader, plan, workers=3))
        assert [(name, rec) for name, rec, _ in got] == [(n, r) for n, rs in plan for r in rs]
        for name, rec, future in got:
            truth = oracle.read_at(name, rec.offset, rec.length)
            if rec.flags:
                assert future is None
            else:
                assert future is not None
                assert bytes(future.result()) == truth
        assert reader.stats.as_dict() == {k: 0 for k in reader.stats.as_dict()}


@pytest.mark.parametrize("seed", range(6))
def test_frames_in_any_order_decode_right(pristine: Path, seed: int) -> None:
    """A random list of frames (repeats, backwards, across packs), small reads and workers."""
    rnd = random.Random(seed)
    with ImageReader(pristine) as reader:
        every = frames_of(reader)
        wanted = [rnd.choice(every) for _ in range(rnd.randint(1, 120))]
        read_size = rnd.choice([1, CHUNK, 4 * CHUNK, frame_stream.READ_SIZE])
        stream = FrameStream(
            paths_of(reader), wanted, workers=rnd.randint(1, 4), read_size=read_size
        )
        decoded = [bytes(f.result()) for f in stream]
        assert stream.stats.frames == len(wanted)
        for (name, rec), data in zip(wanted, decoded, strict=True):
            assert data == reader.read_at(name, rec.offset, rec.length)


def test_frames_in_pack_order_take_few_large_reads(pristine: Path) -> None:
    with ImageReader(pristine) as reader:
        in_order = sorted({(r.pack, r.pack_offset): (n, r) for n, r in frames_of(reader)}.items())
        wanted = [frame for _, frame in in_order]
        stream = FrameStream(paths_of(reader), wanted)
        for future in stream:
            future.result()
    packs = len({rec.pack for _, rec in wanted})
    assert stream.stats.reads == packs  # one read per pack: each is < READ_SIZE here
    assert stream.stats.bytes_read == sum(
        spec.FRAME_HEADER.size + r.stored_length for _, r in wanted
    )


def test_plan_reads_groups_neighbours_only() -> None:
    def rec(pack: int, at: int, stored: int = 100) -> Record:
        return Record(0, 1, pack, at, stored, 0, 0, bytes(16))

    frame = spec.FRAME_HEADER.size + 100
    recs = [rec(0, 32), rec(0, 32 + frame), rec(0, 32), rec(1, 32), rec(1, 32 + 3 * frame)]
    reads = plan_reads(recs, read_size=1 << 20, gap=2 * frame)
    assert [(r.pack, r.start, r.length, r.first, r.cuts) for r in reads] == [
        (0, 32, 2 * frame, 0, (0, frame, 0)),  # the third frame is the first again: sliced
        (1, 32, 4 * frame, 3, (0, 3 * frame)),  # a gap of two frames is read through
    ]
    far = plan_reads([rec(0, 32), rec(0, 32 + 4 * frame)], read_size=1 << 20, gap=2 * frame)
    back = plan_reads([rec(0, 32 + frame), rec(0, 32)], read_size=1 << 20)
    small = plan_reads([rec(0, 32), rec(0, 32 + frame)], read_size=frame)
    assert len(far) == len(back) == len(small) == 2


def damage(image: Path, rec: Record, at: int) -> None:
    path = image / spec.PACKS_DIR / spec.pack_name(rec.pack)
    with open(path, "r+b") as f:
        byte = os.pread(f.fileno(), 1, rec.pack_offset + at)
        os.pwrite(f.fileno(), bytes([byte[0] ^ 0x10]), rec.pack_offset + at)


@pytest.mark.parametrize("where", ["payload", "header"])
def test_a_damaged_frame_gives_read_at_s_error(pristine: Path, tmp_path: Path, where: str) -> None:
    image = tmp_path / "image"
    shutil.copytree(pristine, image)
    with ImageReader(image) as reader:
        every = frames_of(reader)
        spots = [(rec.pack, rec.pack_offset) for _, rec in every]
        name, bad = next(f for f in every if spots.count((f[1].pack, f[1].pack_offset)) > 1)
    damage(image, bad, spec.FRAME_HEADER.size + 5 if where == "payload" else 10)
    with ImageReader(image) as reader, ImageReader(image) as oracle:
        with pytest.raises(ImageError) as expected:
            oracle.read_at(name, bad.offset, bad.length)
        assert f"pack offset {bad.pack_offset}" in str(expected.value)
        seen = 0
        for region, rec, future in region_frames(reader, plan_of(reader)):
            if future is None:
                continue
            if (rec.pack, rec.pack_offset) != (bad.pack, bad.pack_offset):
                future.result()
                continue
            with pytest.raises(ImageError) as found:
                future.result()
            assert str(found.value).split(": ", 1)[1] == str(expected.value).split(": ", 1)[1]
            assert str(found.value).startswith(f"{reader.pack_path(rec.pack)}, region {region}")
            seen += 1
        assert seen >= 2  # p2 refers to it too, and each use says so
        report = reader.verify()
        assert any(str(expected.value) == p.message for p in report.problems), report.problems


def test_a_read_error_names_every_frame_of_the_read(
    pristine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(self: object, read: object) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(frame_stream._PackFiles, "read", failing)
    with ImageReader(pristine) as reader:
        wanted = frames_of(reader)[:3]
        errors = []
        for future in FrameStream(paths_of(reader), wanted):
            with pytest.raises(ImageError) as found:
                future.result()
            errors.append(str(found.value))
    assert [e.split(", region")[1] for e in errors] == [
        f" {name}, offset {rec.offset}: frame at pack offset {rec.pack_offset}:"
        " read failed (Input/output error)"
        for name, rec in wanted
    ]


def test_an_unexpected_error_in_the_reader_thread_reaches_the_caller(
    pristine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, read: object) -> bytes:
        raise RuntimeError("reader bug")

    monkeypatch.setattr(frame_stream._PackFiles, "read", broken)
    with ImageReader(pristine) as reader:
        stream = FrameStream(paths_of(reader), frames_of(reader))
        with pytest.raises(RuntimeError, match="reader bug"):
            for future in stream:
                future.result()
    assert not [t for t in threading.enumerate() if t.name == "clonebay-packs"]


def wait_for(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_the_queue_is_bounded_and_cancel_stops_both_sides(pristine: Path) -> None:
    cancel = threading.Event()
    with ImageReader(pristine) as reader:
        wanted = frames_of(reader)
        stream = FrameStream(paths_of(reader), wanted, workers=2, cancel=cancel, read_size=1)
        frames = iter(stream)
        next(frames).result()
        wait_for(stream._ready.full)
        assert stream.stats.frames <= 1 + 2 * 2 + 1  # taken, queued, the one waiting to queue
        cancel.set()
        with pytest.raises(CancelledError):
            next(frames)
    assert not [t for t in threading.enumerate() if t.name == "clonebay-packs"]


def test_leaving_early_stops_the_threads(pristine: Path) -> None:
    with ImageReader(pristine) as reader:
        for _, _, future in region_frames(reader, plan_of(reader)):
            if future is not None:
                future.result()
                break
    assert not [t for t in threading.enumerate() if t.name.startswith("clonebay-")]
