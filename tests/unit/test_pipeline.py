"""The copy pipeline: order kept under uneven worker times, errors from every stage reach the
caller, cancel stops it, progress adds up, and no thread is left behind."""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
from pathlib import Path

import pytest

from clonebay.engine.pipeline import Chunk, Pipeline, ReadTask
from clonebay.errors import CancelledError, DeviceError
from clonebay.model import Progress

CHUNK = 64 << 10


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src.bin"
    path.write_bytes(random.Random(5).randbytes(5 * 1024 * 1024 + 1234))
    return path


def tasks_for(fd: int, size: int, region: str = "r") -> list[ReadTask]:
    return [ReadTask(region, off, fd, off, min(CHUNK, size - off)) for off in range(0, size, CHUNK)]


def test_order_and_content_survive_uneven_workers(source: Path) -> None:
    rng = random.Random(1)
    delays = [rng.random() / 500 for _ in range(1000)]

    def transform(chunk: Chunk) -> bytes:
        time.sleep(delays[chunk.offset // CHUNK % len(delays)])
        return hashlib.sha256(chunk.data).digest() + bytes(chunk.data)

    out = bytearray()
    offsets: list[int] = []

    def sink(chunk: Chunk, result: bytes) -> None:
        assert result[:32] == hashlib.sha256(chunk.data).digest()
        offsets.append(chunk.offset)
        out.extend(result[32:])

    events: list[Progress] = []
    size = source.stat().st_size
    before = threading.active_count()
    with open(source, "rb") as f:
        pipe: Pipeline[bytes] = Pipeline(
            transform, sink, workers=3, buffers=4, chunk_size=CHUNK, progress=events.append
        )
        pipe.run(tasks_for(f.fileno(), size), {"r": size})
    assert bytes(out) == source.read_bytes()
    assert offsets == sorted(offsets)
    assert events and events[-1].done == size and events[-1].total == size
    assert all(a.done <= b.done for a, b in itertools.pairwise(events))
    assert events[-1].bottleneck in {"read", "transform", "write"}
    assert threading.active_count() == before


def test_worker_error_reaches_caller(source: Path) -> None:
    def transform(chunk: Chunk) -> int:
        if chunk.offset == 10 * CHUNK:
            raise ValueError("boom at chunk 10")
        return 0

    seen: list[int] = []
    with open(source, "rb") as f, pytest.raises(ValueError, match="boom"):
        Pipeline(transform, lambda c, r: seen.append(c.offset), chunk_size=CHUNK).run(
            tasks_for(f.fileno(), source.stat().st_size), {"r": 1}
        )
    assert seen == [i * CHUNK for i in range(10)]


def test_read_past_end_is_a_device_error(source: Path) -> None:
    size = source.stat().st_size
    with open(source, "rb") as f:
        tasks = [ReadTask("p1", 0, f.fileno(), size - 10, 100)]
        with pytest.raises(DeviceError, match="p1"):
            Pipeline(lambda c: 0, lambda c, r: None, chunk_size=CHUNK).run(tasks, {"p1": 100})


def test_sink_error_stops_reader(source: Path) -> None:
    def sink(chunk: Chunk, result: int) -> None:
        raise OSError("disk full")

    before = threading.active_count()
    with open(source, "rb") as f, pytest.raises(OSError, match="disk full"):
        Pipeline(lambda c: 0, sink, chunk_size=CHUNK, buffers=2).run(
            tasks_for(f.fileno(), source.stat().st_size), {"r": 1}
        )
    assert threading.active_count() == before


def test_cancel_stops_within_a_chunk(source: Path) -> None:
    cancel = threading.Event()
    count = 0

    def sink(chunk: Chunk, result: int) -> None:
        nonlocal count
        count += 1
        if count == 3:
            cancel.set()

    with open(source, "rb") as f, pytest.raises(CancelledError):
        Pipeline(lambda c: 0, sink, chunk_size=CHUNK, cancel=cancel).run(
            tasks_for(f.fileno(), source.stat().st_size), {"r": 1}
        )
    assert count == 3


def test_empty_task_list() -> None:
    calls: list[int] = []
    events: list[Progress] = []
    Pipeline(lambda c: 0, lambda c, r: calls.append(1), progress=events.append).run([], {"r": 0})
    assert calls == []
    assert events[-1].done == 0


def test_count_check_refuses_a_plan_the_tasks_do_not_cover(source: Path) -> None:
    """A region whose tasks carry fewer bytes than planned (a chunk never scheduled), or a
    region nobody planned, ends the run with an error, never a quiet success."""
    size = source.stat().st_size
    with open(source, "rb") as f:
        tasks = tasks_for(f.fileno(), size)
        pipe: Pipeline[bytes] = Pipeline(
            lambda c: bytes(c.data), lambda c, r: None, chunk_size=CHUNK
        )
        with pytest.raises(DeviceError, match=r"count check.*r: .* planned"):
            pipe.run(tasks[:-1], {"r": size})
        pipe = Pipeline(lambda c: bytes(c.data), lambda c, r: None, chunk_size=CHUNK)
        with pytest.raises(DeviceError, match="not planned"):
            pipe.run(tasks_for(f.fileno(), size, "other"), {"r": 0})
        pipe = Pipeline(lambda c: bytes(c.data), lambda c, r: None, chunk_size=CHUNK)
        pipe.run(tasks, {"r": size})  # the plan the tasks cover: no error
