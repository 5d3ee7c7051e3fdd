"""Safety audit #10 (in part; skipping unreadable sectors is a later feature): one unreadable
block of the source stops a clone with a device error (exit code 8) that says where the read
failed and that the target is incomplete: inside a partition's used data, and outside every
partition (the post-GPT gap, which before gave a Python traceback and exit code 1). A save
stops the same way (it already did: kept so that it stays so).

The source is a disk image seen through tests/faultfile.py, a FUSE file that fails every read
touching one 4 KiB block with EIO."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from clonebay.errors import DeviceError
from clonebay.testdisks import ext
from tests.diskcheck import extract
from tests.edgedisks import MIB, clonebay, gpt_disk, layout, mkext, sha256
from tests.faultfile import failing

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="FUSE mounts need root"
)
BLOCK = 4096
GAP = 51200  # a byte in the post-GPT gap: after the GPT's entries, before p1 at 1 MiB
CHUNK = 4 * MIB  # the most a single read of clonebay covers


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT disk: p1 ext4 at 1 MiB holding one 8 MiB file of random bytes."""
    work = tmp_path_factory.mktemp("readerr")
    root = work / "files"
    root.mkdir()
    (root / "big.bin").write_bytes(random.Random(10).randbytes(8 * MIB))
    disk = gpt_disk(work / "src.img", 64 * MIB, "1:2048:+48M")
    start, sectors = layout(disk)[1]
    mkext(disk, start * 512, sectors * 512, root=root)
    return disk


def _in_big_file(disk: Path, work: Path) -> int:
    """A byte of the disk in the middle of big.bin's data (debugfs says where its blocks are)."""
    start, sectors = layout(disk)[1]
    p1 = extract(disk, start * 512, sectors * 512, work / "p1.img")
    blocks = ext.blocks_of(p1, "/big.bin")
    assert ext.block_size(p1) == BLOCK
    p1.unlink()
    return start * 512 + blocks[len(blocks) // 2] * BLOCK


def _named_offset(pattern: str, said: str) -> int:
    found = re.search(pattern, said)
    assert found, said
    return int(found.group(1))


@pytest.mark.parametrize("where", ["partition", "gap"])
def test_unreadable_block_stops_the_clone_with_a_device_error(
    source: Path, tmp_path: Path, where: str
) -> None:
    bad = _in_big_file(source, tmp_path) if where == "partition" else GAP
    before = sha256(source)
    target = tmp_path / "tgt.img"
    with failing(source, tmp_path / "mnt", bad, BLOCK) as disk:
        proc = clonebay("clone", str(disk), str(target), "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == DeviceError.exit_code, said
    assert "Traceback" not in said, said
    assert f"{target} is incomplete" in said, said
    if where == "partition":
        p1_start = layout(source)[1][0] * 512
        at = _named_offset(r"read error in p?1 at offset (\d+)", said)
        assert at <= bad - p1_start < at + BLOCK, said
    else:
        at = _named_offset(r"read error on \S+ at byte (\d+) \(outside the partitions\)", said)
        assert at <= bad < at + CHUNK, said
    assert sha256(source) == before


@pytest.mark.parametrize("where", ["partition", "gap"])
def test_unreadable_block_stops_the_save_with_a_device_error(
    source: Path, tmp_path: Path, where: str
) -> None:
    bad = _in_big_file(source, tmp_path) if where == "partition" else GAP
    with failing(source, tmp_path / "mnt", bad, BLOCK) as disk:
        proc = clonebay("save", str(disk), str(tmp_path / "image"))
    said = proc.stdout + proc.stderr
    assert proc.returncode == DeviceError.exit_code, said
    assert "Traceback" not in said, said
    region = "p?1" if where == "partition" else "area0"
    at = _named_offset(rf"read error in {region} at offset (\d+)", said)
    p1_start = layout(source)[1][0] * 512
    assert at <= (bad - p1_start if where == "partition" else bad) < at + BLOCK, said
