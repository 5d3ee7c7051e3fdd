"""The target path's last two checks catch what a feeder or the target got wrong (as bmaptool's
check that the blocks written equal the blocks planned): per region, the bytes planned must
equal the bytes written (fewer or more is a DeviceError naming both counts, never a warning),
and every run written must read back from the medium as it was written (VerifyError naming the
first bad one). A correct feed passes both, on an image file and on a loop device."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash

from clonebay.engine.target import RegionPlan, TargetJob, TargetPath
from clonebay.errors import DeviceError, VerifyError
from clonebay.testdisks.files import sparse_file
from tests.edgedisks import MIB, loop

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
SIZE = 8 * MIB
P1 = (2 * MIB, 4 * MIB)  # the one region: where it lands, its size
PIECE = MIB  # fed in pieces of this size


@pytest.fixture(params=["file", "loop"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An 8 MiB image file, or a loop device over one."""
    image = sparse_file(tmp_path / "target.img", SIZE)
    if request.param == "file":
        yield str(image)
    else:
        with loop(image) as dev:
            yield dev


def _job(target: str, planned: int) -> TargetJob:
    region = RegionPlan("p1", P1[0], P1[1], planned, fstype="ext4")
    return TargetJob("restore", target, SIZE, (region,), table_kind="")


def _data(length: int) -> bytes:
    return random.Random(length).randbytes(length)


def _feed(path: TargetPath, data: bytes) -> None:
    path.begin()
    for at in range(0, len(data), PIECE):
        piece = data[at : at + PIECE]
        path.put("p1", P1[0] + at, piece, xxhash.xxh3_128_digest(piece))


def test_a_correct_feed_passes(target: str) -> None:
    data = _data(P1[1])
    with TargetPath(_job(target, len(data))) as path, path.writing():
        _feed(path, data)
        result = path.finish()
    assert result.planned == result.written == result.verified == {"p1": len(data)}
    with open(target, "rb") as f:
        assert os.pread(f.fileno(), len(data), P1[0]) == data


@pytest.mark.parametrize("fed", [P1[1] - PIECE, P1[1] + PIECE])
def test_count_check_catches_a_feed_that_differs_from_the_plan(target: str, fed: int) -> None:
    """A feeder that puts fewer (a record lost) or more bytes than its plan said."""
    with (
        pytest.raises(DeviceError) as caught,
        TargetPath(_job(target, P1[1])) as path,
        path.writing(),
    ):
        _feed(path, _data(fed))
        path.finish()
    message = caught.value.message
    assert f"count check of {target} failed" in message, message
    assert f"region p1: {P1[1]} bytes planned, {fed} written" in message, message
    assert f"{target} is incomplete" in message, message


def test_verify_catches_bytes_changed_behind_the_path(target: str) -> None:
    """The read-back compares the medium with what was written: another writer's bytes (here a
    second descriptor, as a failing disk or a rogue process would) are found."""
    data = _data(P1[1])
    with (
        pytest.raises(VerifyError) as caught,
        TargetPath(_job(target, len(data))) as path,
        path.writing(),
    ):
        _feed(path, data)
        path.drain()
        fd = os.open(target, os.O_WRONLY)
        try:
            os.pwrite(fd, b"\xa5" * 4096, P1[0] + 3 * PIECE + 8192)
            os.fsync(fd)
        finally:
            os.close(fd)
        path.finish()
    message = caught.value.message
    assert "1 chunk(s) read back differ" in message, message
    assert f"region p1 at target byte {P1[0] + 3 * PIECE}" in message, message


def test_nothing_fed_is_caught(target: str) -> None:
    """A feeder that stops early without an error (a stream cut at a record boundary, say)."""
    with (
        pytest.raises(DeviceError, match=rf"region p1: {P1[1]} bytes planned, 0 written"),
        TargetPath(_job(target, P1[1])) as path,
        path.writing(),
    ):
        path.begin()
        path.finish()
