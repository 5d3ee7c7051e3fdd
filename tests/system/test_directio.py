"""Direct I/O (system/directio.py) against a model of the bytes: every write, whatever its
offset, length or buffer (aligned pool memory, bytes, bytearray, odd sizes), must land exactly
as a buffered write would, on a file, on loop devices with 512- and 4096-byte sectors, and on a
file whose filesystem refuses O_DIRECT at open or at the first transfer (tests/directfuse.py),
which must fall back to buffered I/O without losing a byte."""

from __future__ import annotations

import mmap
import os
import random
from pathlib import Path

import pytest

from clonebay.system.blockdev import TargetDevice
from clonebay.system.directio import DirectFile
from tests.directfuse import refusing
from tests.edgedisks import loop

SIZE = 24 << 20
root = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and FUSE need root")


def _buffer(rng: random.Random, data: bytes) -> bytes | bytearray | memoryview:
    kind = rng.randrange(3)
    if kind == 0:
        return data
    if kind == 1:
        return bytearray(data)
    buf = mmap.mmap(-1, max(len(data), 1))  # page-aligned, as a pipeline buffer
    buf[: len(data)] = data
    return memoryview(buf)[: len(data)]


def _exercise(dev: TargetDevice, seed: int) -> bytes:
    """Random writes, zero runs and reads, each checked against a bytearray model."""
    rng = random.Random(seed)
    model = bytearray(dev.size)
    before = dev.read(dev.size, 0)
    model[:] = before
    for step in range(120):
        aligned = step % 3 == 0
        offset = rng.randrange(0, dev.size // 4096) * 4096 if aligned else rng.randrange(dev.size)
        limit = dev.size - offset
        length = min(limit, rng.choice([512, 4096, 1 << 20, 4 << 20, rng.randrange(1, 5 << 20)]))
        if step % 7 == 0:
            dev.io.write_zeros(offset, length)
            model[offset : offset + length] = bytes(length)
        else:
            data = rng.randbytes(length)
            dev.write_at(_buffer(rng, data), offset)
            model[offset : offset + length] = data
        at = rng.randrange(dev.size)
        n = min(dev.size - at, rng.randrange(1, 6 << 20))
        assert dev.read(n, at) == model[at : at + n], f"step {step}: read at {at}"
        view = memoryview(mmap.mmap(-1, n))
        got = dev.io.read_into(view, at)
        assert got == n and view.tobytes() == model[at : at + n], f"step {step}: read_into"
    dev.sync()
    assert dev.read(dev.size, 0) == model
    return bytes(model)


def test_file_direct_and_exact(tmp_path: Path) -> None:
    with TargetDevice(str(tmp_path / "t.img"), size=SIZE) as dev:
        assert dev.io.direct, "a file on this filesystem takes O_DIRECT"
        _exercise(dev, 1)
        assert dev.io.direct, "no transfer was refused"


def test_buffered_fallback_is_exact(tmp_path: Path) -> None:
    with TargetDevice(str(tmp_path / "t.img"), size=SIZE, direct=False) as dev:
        assert not dev.io.direct
        _exercise(dev, 2)


@root
@pytest.mark.parametrize("sector", [512, 4096])
def test_loop_device(tmp_path: Path, sector: int) -> None:
    backing = tmp_path / "b.img"
    backing.write_bytes(random.Random(3).randbytes(SIZE))
    with loop(backing, sector_size=sector) as dev_path, TargetDevice(dev_path) as dev:
        assert dev.io.direct and dev.io.align == sector
        model = _exercise(dev, sector)
    assert backing.read_bytes() == model


@root
@pytest.mark.parametrize("mode", ["open", "io"])
def test_refused_direct_falls_back(tmp_path: Path, mode: str) -> None:
    backing = tmp_path / "b.img"
    backing.write_bytes(random.Random(4).randbytes(8 << 20))
    with refusing(backing, tmp_path / "mnt", mode) as path, TargetDevice(str(path)) as dev:
        assert dev.io.direct is (mode == "io")
        model = _exercise(dev, 5)
        assert not dev.io.direct, "the refusal switched it to buffered I/O"
    assert backing.read_bytes() == model, "every byte reached the file under the FUSE mount"


def test_read_into_at_the_end(tmp_path: Path) -> None:
    """A file whose size is not a multiple of the alignment: the last read is short."""
    path = tmp_path / "odd.img"
    data = random.Random(6).randbytes(3 * 4096 + 100)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        io = DirectFile(str(path), fd, os.O_RDONLY, 512)
        view = memoryview(mmap.mmap(-1, 4 * 4096))
        assert io.read_into(view, 0) == len(data)
        assert view[: len(data)].tobytes() == data
        assert io.read(8192, 8000) == data[8000:]
        io.close()
    finally:
        os.close(fd)
