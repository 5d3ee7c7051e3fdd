"""The stream form (docs/format.md §10): written once front to back, read back as events, and
converted to and from the directory form without loss.

One deterministic script of writer calls (random, compressible, zero, duplicate, unreadable and
pre-encoded chunks, gaps, an empty region, duplicates across regions) is played into an
ImageWriter and a StreamWriter with the same image id and creation time: the stream converted to
a directory must be that directory byte for byte, and the directory converted back must be the
stream byte for byte. The truth is a bytearray per region built alongside the script.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import random
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import lz4.block
import pytest
import xxhash

from clonebay.imaging import codec, spec, stream
from clonebay.imaging.manifest import Counters, to_json
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.regionlog import region_entry
from clonebay.imaging.source_disk import SourceInfo, TableInfo
from clonebay.imaging.spec import ImageError
from clonebay.imaging.stream_convert import directory_to_stream, stream_to_directory
from clonebay.imaging.stream_read import StreamChunk, StreamEnd, StreamReader
from clonebay.imaging.stream_write import StreamWriter
from clonebay.imaging.writer import ImageWriter

CHUNK = 4096
PACK_LIMIT = 10_000  # two raw frames per pack at most: many packs
IMAGE_ID = bytes(range(16))
CREATED = "2026-01-02T03:04:05Z"
SOURCE = SourceInfo(model="test", size=1 << 30)
Writer = ImageWriter | StreamWriter


@dataclass
class Op:
    region: int
    action: str  # "chunk", "encoded", "zero", "unreadable"
    offset: int
    data: bytes  # for "zero"/"unreadable": zeros of the run's length


@dataclass
class Script:
    regions: list[tuple[str, str, int]]  # name, kind, size
    ops: list[Op]
    truth: dict[str, bytearray]


def words(rnd: random.Random, n: int) -> bytes:
    vocab = [b"inode", b"block", b"extent", b"superblock", b" ", b"\n", b"\0\0"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(vocab)
    return bytes(out[:n])


def make_script(seed: int, regions: int = 5) -> Script:
    rnd = random.Random(seed)
    script = Script([], [], {})
    pool: list[bytes] = [rnd.randbytes(CHUNK), words(rnd, CHUNK)]
    for r in range(regions):
        name = f"p{r + 1}"
        size = rnd.randint(30_000, 120_000) if r != 1 else 0  # region 2 is empty
        script.regions.append((name, ("partition", "raw-area", "disk")[r % 3], size))
        truth = script.truth[name] = bytearray(size)
        pos = 0
        while pos < size:
            action = rnd.choice(["gap", "random", "text", "zero", "unread", "dup", "enc"])
            n = min(rnd.randint(1, 2 * CHUNK + 100), size - pos)
            if action == "random":
                chunk = rnd.randbytes(n)
            elif action == "dup":
                chunk = rnd.choice(pool)
            elif action in ("zero", "unread"):
                chunk = bytes(n)
            elif action == "gap":
                chunk = b""
            else:
                chunk = words(rnd, min(n, CHUNK))
            n = len(chunk) or n
            if pos + n > size:
                break
            if action != "gap":
                kind = {"zero": "zero", "unread": "unreadable", "enc": "encoded"}.get(action)
                script.ops.append(Op(r, kind or "chunk", pos, chunk))
                if kind is None or kind == "encoded":
                    truth[pos : pos + n] = chunk
                    if n <= CHUNK:
                        pool.append(chunk)
            pos += n + (rnd.randint(0, 3000) if rnd.random() < 0.3 else 0)
    return script


def play(script: Script, writer: Writer) -> None:
    entries = [region_entry(n, k, (i + 1) << 20, s) for i, (n, k, s) in enumerate(script.regions)]
    writer.declare(entries, source=SOURCE, table=TableInfo("gpt"))
    ops = iter(script.ops)
    op = next(ops, None)
    for number, (name, kind, size) in enumerate(script.regions):
        writer.begin_region(name, kind, (number + 1) << 20, size)
        while op is not None and op.region == number:
            if op.action == "zero":
                writer.add_zero(op.offset, len(op.data))
            elif op.action == "unreadable":
                writer.add_unreadable(op.offset, len(op.data))
            elif op.action == "encoded":
                writer.add_encoded(op.offset, len(op.data), codec.encode_chunk(op.data))
            else:
                writer.add_chunk(op.offset, op.data)
            op = next(ops, None)
        writer.end_region()
    writer.finish(source=SOURCE, table=TableInfo("gpt"),
                  warnings=["w"], created=CREATED)  # fmt: skip


def write_stream(script: Script, dedup_memory: int = 64 << 20) -> bytes:
    out = io.BytesIO()
    with StreamWriter(
        out,
        chunk_size=CHUNK,
        pack_limit=PACK_LIMIT,
        image_id=IMAGE_ID,
        created=CREATED,
        dedup_memory=dedup_memory,
    ) as w:
        play(script, w)
    return out.getvalue()


def write_directory(script: Script, path: Path) -> Path:
    with ImageWriter(path, chunk_size=CHUNK, pack_limit=PACK_LIMIT, image_id=IMAGE_ID) as w:
        play(script, w)
    return path


def replay(data: bytes) -> tuple[dict[str, bytearray], StreamEnd]:
    """Apply a stream's events to zeroed regions, as a restore would; returns regions and END."""
    reader = StreamReader(io.BytesIO(data))
    regions = {r.name: bytearray(r.size) for r in reader.regions}
    names = [r.name for r in reader.regions]
    end = None
    for event in reader.events():
        if isinstance(event, StreamEnd):
            end = event
            continue
        target = regions[event.name]
        if event.kind == stream.REC_FRAME:
            assert event.data is not None
            target[event.offset : event.offset + event.length] = event.data
        elif event.kind == stream.REC_REF:
            assert event.source is not None
            src_region, src_offset = event.source
            src = regions[names[src_region]]
            target[event.offset : event.offset + event.length] = bytes(
                src[src_offset : src_offset + event.length]
            )
    assert end is not None
    return regions, end


def files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def script() -> Script:
    return make_script(seed=11)


@pytest.fixture(scope="module")
def stream_bytes(script: Script) -> bytes:
    return write_stream(script)


def test_stream_reads_back_the_truth(script: Script, stream_bytes: bytes) -> None:
    regions, end = replay(stream_bytes)
    assert regions == script.truth
    kinds = {e.kind for e in StreamReader(io.BytesIO(stream_bytes)).events()
             if isinstance(e, StreamChunk)}  # fmt: skip
    assert kinds == set(stream.DATA_RECORDS)  # every record type was exercised
    totals = end.manifest.totals
    assert totals.dedup_bytes > 0 and totals.unreadable_bytes > 0 and totals.zero_bytes > 0
    assert end.manifest.packs == () and end.size == len(stream_bytes)
    assert end.manifest.warnings == ("w",) and end.manifest.created == CREATED


def test_stream_converts_to_the_directory_written_directly(
    script: Script, stream_bytes: bytes, tmp_path: Path
) -> None:
    direct = write_directory(script, tmp_path / "direct")
    converted = tmp_path / "converted"
    stream_to_directory(io.BytesIO(stream_bytes), converted)
    assert files(converted) == files(direct)  # packs, indexes and manifest.json
    with ImageReader(converted) as r:
        assert r.verify().ok
        for name, truth in script.truth.items():
            assert r.read_at(name, 0, len(truth)) == truth
        assert len(r.manifest.packs) > 5


def test_directory_to_stream_to_directory_is_lossless(script: Script, tmp_path: Path) -> None:
    direct = write_directory(script, tmp_path / "direct")
    out = io.BytesIO()
    directory_to_stream(direct, out)
    back = tmp_path / "back"
    stream_to_directory(io.BytesIO(out.getvalue()), back)
    assert files(back) == files(direct)


def test_stream_to_directory_to_stream_is_lossless(stream_bytes: bytes, tmp_path: Path) -> None:
    stream_to_directory(io.BytesIO(stream_bytes), tmp_path / "d")
    out = io.BytesIO()
    directory_to_stream(tmp_path / "d", out)
    assert out.getvalue() == stream_bytes


def test_stream_through_a_pipe(script: Script) -> None:
    """A real pipe: the writer cannot seek, the reader gets short reads."""
    rfd, wfd = os.pipe()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            with os.fdopen(wfd, "wb") as out, StreamWriter(out, chunk_size=CHUNK) as w:
                play(script, w)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    with os.fdopen(rfd, "rb") as src:
        data = src.read()
    thread.join()
    assert not errors
    regions, _ = replay(data)
    assert regions == script.truth


def test_dedup_window_is_bounded_and_exact() -> None:
    """With no dedup memory every duplicate is a second FRAME; the data is the same."""
    script = make_script(seed=5)
    small = write_stream(script, dedup_memory=0)
    regions, end = replay(small)
    assert regions == script.truth and end.manifest.totals.dedup_bytes == 0
    regions, end = replay(write_stream(script))
    assert regions == script.truth and end.manifest.totals.dedup_bytes > 0


def test_same_digest_other_payload_is_a_second_frame() -> None:
    data = b"abcd" * 1024
    stored = codec.EncodedChunk(spec.CODEC_STORED, data, codec.digest(data), False)
    out = io.BytesIO()
    with StreamWriter(out, chunk_size=CHUNK) as w:
        w.declare([region_entry("a", "partition", 0, 2 * CHUNK)])
        w.begin_region("a", "partition", 0, 2 * CHUNK)
        w.add_encoded(0, CHUNK, stored)
        w.add_encoded(CHUNK, CHUNK, codec.encode_chunk(data))
        w.end_region()
        manifest = w.finish()
    assert (manifest.totals.frames, manifest.totals.dedup_bytes) == (2, 0)
    regions, _ = replay(out.getvalue())
    assert regions["a"] == data * 2


def test_writer_refuses_misuse() -> None:
    w = StreamWriter(io.BytesIO(), chunk_size=CHUNK)
    with pytest.raises(ValueError, match="declare"):
        w.begin_region("a", "partition", 0, 10)
    w.declare([region_entry("a", "partition", 0, 10), region_entry("b", "partition", 10, 10)])
    with pytest.raises(ValueError, match="next declared region"):
        w.begin_region("b", "partition", 10, 10)
    with pytest.raises(ValueError, match="next declared region"):
        w.begin_region("a", "partition", 0, 11)
    w.begin_region("a", "partition", 0, 10)
    w.end_region()
    with pytest.raises(ValueError, match="not written: b"):
        w.finish()


def records(data: bytes) -> list[tuple[int, int, int]]:
    """(stream offset, record type, record length) of every record of a good stream."""
    out, pos = [], stream.STREAM_HEADER.size
    while pos < len(data):
        head = stream.parse_record_header(data[pos : pos + 32], "test")
        out.append((pos, head.kind, 32 + head.body_length))
        pos += 32 + head.body_length
    return out


def read_all(data: bytes) -> None:
    reader = StreamReader(io.BytesIO(data))
    for _ in reader.events():
        pass


def test_truncated_stream_names_the_byte_and_the_last_data(stream_bytes: bytes) -> None:
    cuts = [pos for pos, _, _ in records(stream_bytes)] + [len(stream_bytes) - 1, 5, 40]
    frames = [(pos, size) for pos, kind, size in records(stream_bytes) if kind == 2]
    cuts += [pos + size // 2 for pos, size in frames[:5]]
    for cut in cuts:
        with pytest.raises(ImageError) as err:
            read_all(stream_bytes[:cut])
        text = str(err.value)
        assert f"byte {cut}" in text or cut < stream.STREAM_HEADER.size, text
        assert "incomplete" in text or "cut" in text, text
    with pytest.raises(ImageError, match=r"no END record.*last data received: region p\d"):
        read_all(stream_bytes[: records(stream_bytes)[-3][0]])


def stored_frame(data: bytes, listed: list[tuple[int, int, int]]) -> int:
    """A FRAME whose payload is stored (an LZ4 payload may survive a flip: a match offset can
    move to an identical earlier string, and then the data is still right)."""
    for pos, kind, size in listed:
        if kind == stream.REC_FRAME and size > 300 and data[pos + 36] == spec.CODEC_STORED:
            return pos
    raise AssertionError("no stored frame")


@pytest.mark.parametrize("where", ["payload", "frame header", "record header", "ref", "index"])
def test_flipped_bit_names_the_record(stream_bytes: bytes, where: str) -> None:
    listed = records(stream_bytes)
    kind = {"ref": stream.REC_REF, "index": stream.REC_INDEX}.get(where, stream.REC_FRAME)
    if kind == stream.REC_FRAME:
        pos = stored_frame(stream_bytes, listed)
    else:
        pos = next(pos for pos, k, size in listed if k == kind and size > 50)
    at = {"payload": pos + 64 + 50, "frame header": pos + 32 + 20, "record header": pos + 9,
          "ref": pos + 32 + 3, "index": pos + 32 + 140}[where]  # fmt: skip
    data = bytearray(stream_bytes)
    data[at] ^= 0x08
    with pytest.raises(ImageError) as err:
        read_all(bytes(data))
    text = str(err.value)
    assert f"byte {pos}" in text, text
    if where != "record header":
        assert stream.RECORD_NAMES[kind] in text and "region p" in text, text


def test_data_after_end_and_foreign_input_are_refused(stream_bytes: bytes) -> None:
    with pytest.raises(ImageError, match="after the END"):
        read_all(stream_bytes + b"\0")
    with pytest.raises(ImageError, match="not a clonebay stream"):
        read_all(b"CBPACK\r\n" + bytes(100))
    with pytest.raises(ImageError, match="empty"):
        read_all(b"")


def test_reordered_records_are_refused(stream_bytes: bytes) -> None:
    listed = [r for r in records(stream_bytes) if r[1] in stream.DATA_RECORDS]
    (a, _, na), (b, _, nb) = listed[3], listed[4]
    swapped = stream_bytes[:a] + stream_bytes[b : b + nb] + stream_bytes[a : a + na]
    swapped += stream_bytes[b + nb :]
    with pytest.raises(ImageError, match=r"out of order|arrived|INDEX"):
        read_all(swapped)


# A v1 stream made by clonebay 0.1.0 (zlib + base64): region p1 (16 KiB, disk offset 1 MiB)
# holds TEXT at 0, a zero chunk at 4096, TEXT again at 8192 (a REF) and 512 unreadable bytes at
# 12288. Every later reader must read it (docs/format.md §9).
FROZEN_V1 = (
    "eNrtVU2IHEUUns3uJDrZREG8aIzDHCWzVtf07yL+7ERJDsqSRAhKGKqrqmeameluq3vc2YkjAfGUo0FQQdSbByOIohD3FO/i"
    "RQgKnoOCHjwKWlU96b+tWcghByHF9DT9vVfv1fvqVX3drfMXzr18rLFSa9bkWDm0ulY/fOSBBxtH148df6i7df7cSm3/WKvX"
    "ar//RHcuN5rNlheyMUpam80WHoUBddFu2x+jPm2dyq29NymL/TDgXpqEGX1j4jMac+D1SxJJwnBUDNIEG9oGSINgRlFCiTBD"
    "AM22prWhcQGATfl7LXWSSXu+9AIAaACCDtCBAUxgARs4AAEXYEAABd4i7GASDHuxP6N8jg4cU6IRwsPeyB/7oiYN6LZhpQYc"
    "EopF9NFMTwMMUDwQwHQ66LQ1aKdoHE4YFiEFPeI7TaCZlmVBzeTgPK0YuaOC29AP5Nr7UdLKfBjtc9okTdIr9eWGAI3F3Fak"
    "yaSlCBFiiZ8IujMT8eNhL/S8mFaqKq+wY+sZ6MXJbiRz0Gmi56FGyKVyp3JoMklpz5E44RtWhnAY7QqEoZ3CzJiSnrubyE4o"
    "5+d7HsuOKcQIwqTQMxLiNdNpxmK6cn+04GbDJ9Nsdl4oKEBi7xYtc+BoLabMSzXG5cyM4pCRuJLCY3yzqiCnISu8iM8oC5WG"
    "ScAZIaJnlGZCySRSWuIkZAWWwb5C+P4yJAqZS0T8X8qOQuGI7iAW+EG/gORrKh7kBI1yXvZzso8PFRdKHg7gQF2/qvb54uxT"
    "XttkXDy+mw4ydUgIcDQETc/p2BZBloMwIUZHdyBsNeaN7VffefqRaC/47s+jp2/cXh+LO/JQ8XJ8OH09w58vrt/6qrv1UnqH"
    "cvwEfz211/76n0/XT55kZ5/9/PoLHz2HXLxa+7c8/t7GHJ6K2KuFmNmbjw++7X4o7HXx0SzbH+PPqSdPNHPvalYxc00YwMKh"
    "UMJfV1+8LOyHFTf/Ni/lm58fr3e3zr5y+qJQjisyxNodh+drSiWJtNq9GbxiQRipp5+C4RVFvSoGs6GSuOZdxlfwmA0F9vb3"
    "716cnfnsy7d++PHR43s3rgm+jyimBjzvr9duvndfae8r7f9RaTtQpbUWdbFtGLaFdBtB5FkY69jTDEBd4rqOfpdaq6u0Vlui"
    "tbbmwGVye6czlyuuocGlmluZXZEe897pbrlf00audmzekRDadt5iNOgng7SwyiKW67he1XFNoeM5z8s4PpDfpdwqeT1A06Fl"
    "IGTrEDu80Sh1XABs2ySOZREPw44hNP2Pjz/55dYTs6vDM1du3n6f/PYfJMf/lA=="
)


def test_frozen_v1_stream_reads_back(tmp_path: Path) -> None:
    data = zlib.decompress(base64.b64decode(FROZEN_V1))
    text = b"abc" * 1365 + b"x"
    regions, end = replay(data)
    assert regions["p1"] == text + bytes(4096) + text + bytes(4096)
    m = end.manifest
    assert (m.image_id, m.created, m.chunk_size) == (IMAGE_ID.hex(), "2026-11-25T00:00:00Z", 4096)
    assert m.regions[0].disk_offset == 1 << 20 and m.unreadable[0].offset == 12288
    assert (m.totals.frames, m.totals.dedup_bytes, m.totals.zero_bytes) == (1, 4096, 4096)
    stream_to_directory(io.BytesIO(data), tmp_path / "img")
    out = io.BytesIO()
    directory_to_stream(tmp_path / "img", out)
    assert out.getvalue() == data


def test_a_stream_assembled_from_the_spec_reads_back() -> None:
    """Headers, CRCs, seals and the INDEX laid out byte by byte from docs/format.md §10."""
    data = zlib.decompress(base64.b64decode(FROZEN_V1))
    manifest = StreamReader(io.BytesIO(data)).manifest
    text = b"hello stream " * 300
    payload = lz4.block.compress(text, store_size=False)
    digest = xxhash.xxh3_128_digest(text)

    def header(kind: int, region: int, offset: int, length: int, body: int) -> bytes:
        head = struct.pack("<4sBBHQQI", b"CBSR", kind, 0, region, offset, length, body)
        return head + struct.pack("<I", zlib.crc32(head))

    def sealed(body: bytes) -> bytes:
        return body + xxhash.xxh3_128_digest(body)

    start = struct.pack("<8sHHI16s", b"CBSTRM\r\n", 1, 32, 0, IMAGE_ID)
    head_json = to_json(manifest)  # the frozen stream's MANIFEST, reused as is
    out = bytearray(start)
    out += header(1, 0, 0, 0, len(head_json) + 16) + sealed(head_json)
    frame_at = len(out) + 32
    frame = struct.pack("<4sBBHII16s", b"CBFR", 1, 0, 0, len(text), len(payload), digest)
    out += header(2, 0, 100, len(text), 32 + len(payload)) + frame + payload
    index = struct.pack(
        "<8sHHHHQQ16s64s16s", b"CBINDX\r\n", 1, 128, 48, 0, 1, 4 * 4096, IMAGE_ID, b"p1",
        bytes(16),
    )  # fmt: skip
    index += struct.pack(
        "<QIIQIBBH16s", 100, len(text), 0xFFFF_FFFF, frame_at, len(payload), 1, 0, 0, digest
    )
    out += header(6, 0, 0, 0, len(index) + 16) + sealed(index)
    entry = dataclasses.replace(
        manifest.regions[0],
        index_size=len(index),
        index_xxh3=xxhash.xxh3_128_hexdigest(index),
        stats=Counters(records=1, frames=1, raw_bytes=len(text),
                       stored_bytes=32 + len(payload)),
    )  # fmt: skip
    final = to_json(dataclasses.replace(manifest, regions=(entry,), totals=entry.stats))
    out += header(7, 0, 0, 0, len(final) + 16) + sealed(final)
    regions, _ = replay(bytes(out))
    assert regions["p1"][100 : 100 + len(text)] == text
    assert regions["p1"].count(0) == 4 * 4096 - len(text)
