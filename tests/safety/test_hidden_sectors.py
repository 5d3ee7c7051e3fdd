"""Safety audit #16: a single volume cloned (or a region restored) onto a partition at another
LBA kept its old BPB hidden-sectors value: the volume was placed at byte 0 of the partition,
so nothing counted as moved and no fixup ran. A FAT32 or NTFS volume then names the wrong start
and may not boot. Now the value is the target partition's start, in the boot sector and in
FAT32's backup boot sector (sector 6).

And audit #14 for the same route: a hibernated NTFS is still never edited; it lands byte for
byte as it was, and the result says its hidden sectors were not patched."""

from __future__ import annotations

import contextlib
import os
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.system.run import run
from clonebay.testdisks import fat
from clonebay.testdisks import ntfs as ntfsdisk
from tests.diskcheck import sha256_range
from tests.edgedisks import MIB, clonebay, gpt_disk, layout, loop, put, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and ntfs-3g need root")
HIDDEN_SECTORS = 0x1C  # BPB (FAT and NTFS): u32, the volume's start in sectors
FAT32_BACKUP_BOOT = 6  # BPB_BkBootSec as mkfs.fat writes it
TARGET_P2 = 40 * 2048  # sector where the target's p2 starts (the source's p1 is at 2048)
NOT_PATCHED = "hidden sectors not patched"


@dataclass(frozen=True)
class Source:
    disk: Path
    fat_files: dict[str, str]
    ntfs: tuple[int, int]  # p2: start, size in bytes


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """GPT: p1 FAT32 (64 MiB, at 1 MiB, a few files), p2 a hibernated NTFS (40 MiB)."""
    work = tmp_path_factory.mktemp("hidden")
    root = work / "files"
    root.mkdir()
    rng = random.Random(16)
    names = [f"F{i}.BIN" for i in range(5)]
    for name in names:
        (root / name).write_bytes(rng.randbytes(rng.randrange(1, 300_000)))
    disk = gpt_disk(work / "src.img", 128 * MIB, "1:2048:+64M", "2:0:+40M")
    parts = layout(disk)
    vfat = fat.make_fat(work / "p1.img", parts[1][1] * 512, 32, start_sector=parts[1][0])
    fat.copy_files(vfat, root, names)
    hib = ntfsdisk.make_ntfs(work / "p2.img", parts[2][1] * 512, start_sector=parts[2][0])
    ntfsdisk.add_hiberfil(hib, b"HIBR")
    put(disk, vfat, parts[1][0] * 512)
    put(disk, hib, parts[2][0] * 512)
    assert _hidden(disk, parts[1][0] * 512) == 2048
    return Source(disk, fat.hash_folder(root), (parts[2][0] * 512, parts[2][1] * 512))


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """GPT: p1 39 MiB, p2 72 MiB at 40 MiB, p3 48 MiB at 112 MiB."""
    disk = gpt_disk(tmp_path / "tgt.img", 192 * MIB, "1:2048:+39M", "2:0:+72M", "3:0:+48M")
    assert layout(disk)[2][0] == TARGET_P2
    return disk


@contextlib.contextmanager
def partition_nodes(image: Path) -> Iterator[str]:
    """``image`` as a loop device with its partition nodes (partx -a); detached after."""
    with loop(image) as dev:
        run(["partx", "-a", dev])
        yield dev


def _hidden(path: Path | str, at: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        value: int = struct.unpack("<I", os.pread(fd, 4, at + HIDDEN_SECTORS))[0]
    finally:
        os.close(fd)
    return value


def assert_fat_at(node: str, start: int, files: dict[str, str]) -> None:
    """The FAT32 at ``node`` names ``start`` in both boot sectors, is clean, has the files."""
    assert _hidden(node, 0) == start
    assert _hidden(node, FAT32_BACKUP_BOOT * 512) == start
    fat.fsck(Path(node))
    assert fat.file_hashes(Path(node)) == files


@pytest.mark.parametrize("how", ["clone", "restore"])
def test_fat32_volume_gets_its_new_start(
    source: Source, target: Path, tmp_path: Path, how: str
) -> None:
    before = sha256(source.disk)
    with partition_nodes(source.disk) as src, partition_nodes(target) as tgt:
        if how == "clone":
            proc = clonebay("clone", f"{src}p1", f"{tgt}p2", "--yes")
        else:
            image = tmp_path / "p1img"
            saved = clonebay("save", str(source.disk), str(image), "--partition", "1")
            assert saved.returncode == 0, saved.stdout + saved.stderr
            proc = clonebay("restore", str(image), f"{tgt}p2", "--yes")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert_fat_at(f"{tgt}p2", TARGET_P2, source.fat_files)
    assert f"hidden sectors set to {TARGET_P2}" in proc.stdout + proc.stderr
    assert sha256(source.disk) == before


@pytest.mark.parametrize("how", ["clone", "restore"])
def test_hibernated_ntfs_is_not_edited(
    source: Source, target: Path, tmp_path: Path, how: str
) -> None:
    before = sha256(source.disk)
    start, size = source.ntfs
    with partition_nodes(source.disk) as src, partition_nodes(target) as tgt:
        if how == "clone":
            proc = clonebay("clone", f"{src}p2", f"{tgt}p3", "--yes")
        else:
            image = tmp_path / "p2img"
            saved = clonebay("save", str(source.disk), str(image), "--partition", "2")
            assert saved.returncode == 0, saved.stdout + saved.stderr
            proc = clonebay("restore", str(image), f"{tgt}p3", "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert NOT_PATCHED in said and "hibernated" in said, said
    new_start = layout(target)[3][0] * 512
    assert new_start != start  # it moved ...
    assert _hidden(target, new_start) == start // 512  # ... and still names its old start
    assert sha256_range(target, new_start, size) == sha256_range(source.disk, start, size)
    assert sha256(source.disk) == before
