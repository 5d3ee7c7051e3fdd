"""Whole test disks: probe finds every partition's filesystem, and a copy of only the bytes our
maps mark as used (plus the areas outside partitions) is a disk whose every filesystem is clean by
its own fsck and whose every file hashes as recorded."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.engine.inspect import DiskReport, inspect_disk, used_extents
from clonebay.fs import extents
from clonebay.model import CopyMethod
from clonebay.system.run import run
from clonebay.testdisks import disks, ext, fat, ntfs
from clonebay.testdisks.files import sparse_file
from tests.oracles import copy_extents

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="NTFS images are filled through FUSE")

CHECKERS: dict[str, tuple[Callable[[Path], None], Callable[[Path], dict[str, str]]]] = {
    "ext3": (ext.fsck, ext.file_hashes),
    "ext4": (ext.fsck, ext.file_hashes),
    "ntfs": (ntfs.fsck, ntfs.file_hashes),
    "fat12": (fat.fsck, fat.file_hashes),
    "fat16": (fat.fsck, fat.file_hashes),
    "fat32": (fat.fsck, fat.file_hashes),
}


@pytest.fixture(scope="module", params=["gpt", "mbr"])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> disks.BuiltDisk:
    work = tmp_path_factory.mktemp(request.param)
    maker = disks.gpt_disk if request.param == "gpt" else disks.mbr_disk
    return maker(work / "disk.img", disks.TEST, work=work)


def extract(disk: Path, start: int, size: int, dst: Path) -> Path:
    sparse_file(dst, size)
    with open(disk, "rb") as fin, open(dst, "r+b") as fout:
        pos = 0
        while pos < size:
            n = min(size - pos, 8 << 20)
            data = os.pread(fin.fileno(), n, start + pos)
            if data.count(0) != len(data):
                os.pwrite(fout.fileno(), data, pos)
            pos += n
    return dst


def sha256_range(path: Path, start: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = size
        while left:
            piece = f.read(min(left, 8 << 20))
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


@needs_root
def test_probe_finds_every_filesystem(built: disks.BuiltDisk) -> None:
    report = inspect_disk(str(built.path))
    assert report.table.kind == built.table
    found = {pr.partition.number: pr.volume for pr in report.partitions if pr.volume}
    for part in built.partitions:
        volume = found[part.number]
        if part.fstype == "empty-msr":
            assert volume.copy is CopyMethod.RAW and volume.fstype == "unknown"
            continue
        assert volume.fstype == part.fstype, part
        if part.fstype == "unknown":
            assert volume.copy is CopyMethod.RAW
        else:
            assert volume.copy is CopyMethod.NATIVE, volume.reason


@needs_root
def test_copy_of_used_extents_is_whole(built: disks.BuiltDisk, tmp_path: Path) -> None:
    report: DiskReport = inspect_disk(str(built.path))
    used = used_extents(report)
    assert extents.total(used) < built.size
    copy = tmp_path / "copy.img"
    copy_extents(built.path, copy, used)
    with open(copy, "rb") as f:
        assert f.read(440) == built.boot_code or built.table == "gpt"
    for part in built.partitions:
        if part.content_sha256:
            assert sha256_range(copy, part.start, part.size) == part.content_sha256
            continue
        if part.fstype not in CHECKERS:
            continue
        fsck, file_hashes = CHECKERS[part.fstype]
        image = extract(copy, part.start, part.size, tmp_path / f"p{part.number}.img")
        fsck(image)
        assert part.tree is not None
        assert file_hashes(image) == part.tree.files, part.fstype
        image.unlink()
    # The copy's partition table reads the same as the original's.
    assert inspect_disk(str(copy)).table == report.table


@needs_root
def test_probe_cli_json(built: disks.BuiltDisk, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--json", str(built.path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["table"] == built.table
    numbers = [p["number"] for p in data["partitions"] if p["volume"]]
    assert numbers == [p.number for p in built.partitions]
    assert cli.main(["probe", str(built.path)]) == 0
    text = capsys.readouterr().out
    for part in built.partitions:
        if part.fstype not in ("unknown", "empty-msr"):
            assert part.fstype in text


def test_probe_missing_disk_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["probe", str(tmp_path / "absent.img")]) == 5
    assert "absent.img" in capsys.readouterr().err


def test_probe_truncated_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "disk.img"
    sparse_file(path, 64 << 20)
    run(["sfdisk", "-q", str(path)], input_bytes=b"label: dos\n,,83\n")
    os.truncate(path, 40 << 20)
    assert cli.main(["probe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "truncated" in out and "past the end" in out
