"""Volumes whose files reach the end (issue 16): an NTFS and an ext4 used until their free
space is in pieces and their files lie up to their last clusters, cloned and restored onto a
disk where each gets under half of its size. Their resizers must move data (the source's
used blocks reach past the new ends; the overlays hold megabytes), and every file must hash
as it did."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.engine.inspect import inspect_disk
from clonebay.system.run import run
from clonebay.testdisks import ntfs
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import extract, sha256_range
from tests.shrink.churn import ChurnedDisk

MIB = 1 << 20


def _files_of(volume: Path, fstype: str, work: Path) -> dict[str, str]:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    if fstype == "ntfs":
        with ntfs.mounted(volume, read_only=True) as root:
            return _hashes(root)
    run(["mount", "-o", "ro,loop", str(volume), str(mnt)])
    try:
        return _hashes(mnt)
    finally:
        run(["umount", str(mnt)])


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if not rel.startswith("lost+found"):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _check(target: Path, disk: ChurnedDisk, work: Path) -> None:
    after = inspect_disk(str(target))
    for pr in after.partitions:
        number, part = pr.partition.number, pr.partition
        assert pr.volume is not None
        fstype = pr.volume.fstype
        volume = extract(target, part.start, part.size, work / f"p{number}.img")
        if fstype == "ntfs":
            ntfs.fsck(volume)
        else:
            run(["e2fsck", "-f", "-n", str(volume)])
        assert _files_of(volume, fstype, work) == disk.files[number], f"files of p{number}"
        volume.unlink()
    assert "No problems found" in run(["sgdisk", "-v", str(target)]).stdout.decode()


@pytest.mark.parametrize("job", ["clone", "restore"])
def test_scattered_files_move_below_the_new_ends(
    churned: ChurnedDisk, job: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = inspect_disk(str(churned.path))
    reach = {
        pr.partition.number: max(e.end for e in pr.volume.used)
        for pr in source.partitions
        if pr.volume is not None
    }
    target = sparse_file(tmp_path / "target.img", 2 * 200 * MIB + 4 * MIB)
    if job == "clone":
        assert cli.main(["clone", "--yes", str(churned.path), str(target)]) == 0
    else:
        image = tmp_path / "disk.image"
        assert cli.main(["save", str(churned.path), str(image)]) == 0
        capsys.readouterr()
        assert cli.main(["restore", "--yes", "--verify", str(image), str(target)]) == 0
    said = capsys.readouterr().out
    after = inspect_disk(str(target))
    for pr in after.partitions:
        number = pr.partition.number
        assert pr.partition.size < churned.starts[2] - MIB, "not shrunk"
        assert reach[number] > pr.partition.size, f"p{number}: no data past the new end"
    assert said.count("shrunk from 512.0 MiB") == 2, said
    _check(target, churned, tmp_path)
    assert sha256_range(churned.path, 0, churned.size) == churned.sha256
