"""Swap probe against mkswap, blkid and swaplabel: the map is the header page, and a copy of only
that page is a swap area with the same UUID and label. Hibernated areas are copied raw."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clonebay.errors import FilesystemError
from clonebay.fs import extents, swap
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import BytesSource, FileSource
from clonebay.testdisks.swap import build_swap, fsck, hibernate, identity, swaplabel
from tests.oracles import copy_extents

MiB = 1 << 20
UUID = "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9"


@dataclass(frozen=True)
class Built:
    path: Path
    page_size: int
    volume: Volume


def probe_file(path: Path) -> Volume:
    with FileSource(str(path)) as src:
        assert swap.detect(src.pread(min(src.size, 65536), 0))
        return swap.probe(src)


@pytest.fixture(scope="module", params=[4096, 65536])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("swap") / "swap.img"
    build_swap(path, 64 * MiB, label=f"swap-{request.param}", uuid=UUID, page_size=request.param)
    return Built(path, request.param, probe_file(path))


def test_header_read_like_blkid(built: Built) -> None:
    found = identity(built.path)
    volume = built.volume
    assert (volume.fstype, volume.copy, volume.state) == (
        "swap",
        CopyMethod.NATIVE,
        VolumeState.CLEAN,
    )
    assert (
        (volume.label, volume.uuid)
        == (found["LABEL"], found["UUID"])
        == (
            f"swap-{built.page_size}",
            UUID,
        )
    )
    assert volume.block_size == built.page_size
    assert 64 * MiB - built.page_size < volume.size <= 64 * MiB


def test_map_is_the_header_page(built: Built) -> None:
    assert built.volume.used == (Extent(0, built.page_size),)


def test_copy_of_header_page_is_the_same_swap(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "copy.img"
    copy_extents(built.path, copy, built.volume.used)
    fsck(copy)
    original, copied = identity(built.path), identity(copy)
    assert {k: copied[k] for k in ("TYPE", "LABEL", "UUID", "VERSION")} == {
        k: original[k] for k in ("TYPE", "LABEL", "UUID", "VERSION")
    }
    assert swaplabel(copy) == {"LABEL": built.volume.label, "UUID": UUID}
    assert probe_file(copy) == built.volume


@pytest.mark.parametrize("signature", [b"S1SUSPEND\0", b"ULSUSPEND\0", b"LINHIB0001"])
def test_hibernated_swap_is_copied_raw(tmp_path: Path, signature: bytes) -> None:
    path = build_swap(tmp_path / "hib.img", 16 * MiB, label="resume", uuid=UUID)
    hibernate(path, 4096, signature)
    assert identity(path)["TYPE"] == "swsuspend"  # blkid agrees this is a hibernation image
    volume = probe_file(path)
    assert (volume.copy, volume.state) == (CopyMethod.RAW, VolumeState.HIBERNATED)
    assert volume.used == (Extent(0, 16 * MiB),)
    assert "hibernation" in volume.reason
    assert (volume.label, volume.uuid) == ("resume", UUID)


@pytest.fixture(scope="module")
def header_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("swap-small") / "small.img"
    build_swap(path, 1 * MiB, label="small", uuid=UUID)
    return path.read_bytes()


def test_truncated_swap_is_refused(header_bytes: bytes) -> None:
    with pytest.raises(FilesystemError, match="truncated"):
        swap.probe(BytesSource(header_bytes[: 64 << 10], "cut"))


def test_unknown_version_is_refused(header_bytes: bytes) -> None:
    data = bytearray(header_bytes)
    struct.pack_into("<I", data, 1024, 2)
    with pytest.raises(FilesystemError, match="unknown version"):
        swap.probe(BytesSource(bytes(data)))


def test_big_endian_header_is_read(header_bytes: bytes) -> None:
    data = bytearray(header_bytes)
    version, last_page, bad = struct.unpack_from("<III", data, 1024)
    struct.pack_into(">III", data, 1024, version, last_page, bad)
    volume = swap.probe(BytesSource(bytes(data)))
    assert (volume.label, volume.uuid, volume.size) == ("small", UUID, 1 * MiB)


def test_not_swap() -> None:
    assert not swap.detect(bytes(65536))
    assert not swap.detect(b"SWAPSPACE2")  # too short to hold a page
    with pytest.raises(FilesystemError):
        swap.probe(BytesSource(bytes(8192)))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    patches=st.lists(st.tuples(st.integers(1024, 1100), st.integers(0, 255)), max_size=8),
    magic=st.sampled_from([b"SWAPSPACE2", b"SWAP-SPACE", b"S1SUSPEND\0", b"SWAPSPACE3"]),
    cut=st.integers(0, 1 * MiB),
)
def test_mutated_headers(
    header_bytes: bytes, patches: list[tuple[int, int]], magic: bytes, cut: int
) -> None:
    data = bytearray(header_bytes)
    data[4086:4096] = magic
    for offset, value in patches:
        data[offset] = value
    src = BytesSource(bytes(data[:cut]), "mutated")
    if not swap.detect(bytes(data[: min(cut, 65536)])):
        return
    try:
        volume = swap.probe(src)
    except FilesystemError:
        return
    assert volume.used == extents.normalize(volume.used)
    assert all(e.start >= 0 and e.end <= src.size for e in volume.used)
    assert 0 < volume.size <= src.size
