"""The volume prober: containers and encrypted volumes go raw with a reason; garbage never
crashes it; a parser's refusal becomes a raw copy that says why."""

from __future__ import annotations

import os
import random
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clonebay.fs.probe import probe_volume
from clonebay.model import CopyMethod, Extent, VolumeState
from clonebay.system.blockdev import BytesSource, FileSource
from clonebay.system.run import run
from clonebay.testdisks.files import sparse_file


def assert_raw_whole(volume_size: int, used: tuple[Extent, ...]) -> None:
    assert used == (Extent(0, volume_size),)


def test_luks_made_by_cryptsetup_is_raw_encrypted(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "luks.img", 32 << 20)
    run(
        [
            "cryptsetup",
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            str(image),
            "-",
        ],
        input_bytes=b"secret",
    )
    with FileSource(str(image)) as src:
        volume = probe_volume(src)
    assert volume.fstype == "luks"
    assert volume.state is VolumeState.ENCRYPTED
    assert volume.copy is CopyMethod.RAW
    assert_raw_whole(src.size, volume.used)
    assert "LUKS" in volume.reason


def test_bitlocker_signature_is_raw_encrypted() -> None:
    # A BitLocker volume's boot sector: jump, "-FVE-FS-" where NTFS has "NTFS    ", 0x55AA.
    sector = bytearray(random.Random(1).randbytes(1 << 20))
    sector[0:3] = b"\xeb\x58\x90"
    sector[3:11] = b"-FVE-FS-"
    sector[510:512] = b"\x55\xaa"
    volume = probe_volume(BytesSource(bytes(sector)))
    assert volume.fstype == "bitlocker"
    assert volume.state is VolumeState.ENCRYPTED
    assert volume.copy is CopyMethod.RAW
    assert "BitLocker" in volume.reason


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for a loop device")
    image = sparse_file(tmp_path / "pv.img", 64 << 20)
    dev = run(["losetup", "--find", "--show", str(image)]).stdout.decode().strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_lvm_pv_in_no_volume_group_is_its_label_and_metadata(loop_device: str) -> None:
    """A PV that pvcreate made and no VG uses: only [0, pe_start) is copied (tests/fs/test_lvm.py
    has PVs with volume groups)."""
    run(["pvcreate", "-q", "-ff", "-y", "--devices", loop_device, loop_device])
    argv = ["pvs", "--devices", loop_device, "--noheadings", "--units", "b", "--nosuffix"]
    pe_start = int(run([*argv, "-o", "pe_start", loop_device]).stdout.decode())
    with FileSource(loop_device) as src:
        volume = probe_volume(src)
    assert volume.fstype == "lvm2-pv"
    assert volume.copy is CopyMethod.NATIVE
    assert volume.used == (Extent(0, pe_start),)


@pytest.mark.parametrize("offset", [0, 4096, -8192])
def test_md_superblock_is_raw(offset: int) -> None:
    data = bytearray(1 << 20)
    at = offset if offset >= 0 else (len(data) + offset) & ~4095
    struct.pack_into("<I", data, at, 0xA92B4EFC)
    volume = probe_volume(BytesSource(bytes(data)))
    assert volume.fstype == "md-member"
    assert volume.copy is CopyMethod.RAW


@pytest.mark.parametrize(
    ("type_id", "words"),
    [("AF9B60A0-1431-4F62-BC68-3311714A69AD", "LDM"), ("0x42", "dynamic")],
)
def test_container_partition_types_are_raw(type_id: str, words: str) -> None:
    volume = probe_volume(BytesSource(bytes(1 << 16)), type_id)
    assert volume.copy is CopyMethod.RAW
    assert words in volume.reason


def test_zeros_and_random_are_raw_unknown() -> None:
    zero = probe_volume(BytesSource(bytes(1 << 20)))
    assert zero.fstype == "unknown" and "zeros" in zero.reason
    noise = probe_volume(BytesSource(random.Random(2).randbytes(1 << 20)))
    assert noise.fstype == "unknown" and noise.copy is CopyMethod.RAW


MAGICS = [
    (3, b"NTFS    "),
    (1024 + 56, b"\x53\xef"),
    (3, b"MSDOS5.0"),
    (4086, b"SWAPSPACE2"),
    (54, b"FAT16   "),
    (82, b"FAT32   "),
]


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=512, max_size=8192),
    st.sampled_from(MAGICS),
    st.integers(min_value=0, max_value=1 << 20),
)
def test_garbage_with_magic_never_crashes(noise: bytes, magic: tuple[int, bytes], pad: int) -> None:
    offset, sig = magic
    data = bytearray(noise + bytes(max(0, offset + len(sig) - len(noise))) + bytes(pad))
    data[offset : offset + len(sig)] = sig
    if len(data) >= 512:
        data[510:512] = b"\x55\xaa"
    volume = probe_volume(BytesSource(bytes(data)))
    assert all(e.start >= 0 and e.end <= len(data) for e in volume.used)
    if volume.copy is CopyMethod.RAW:
        assert volume.reason
        assert_raw_whole(len(data), volume.used)
