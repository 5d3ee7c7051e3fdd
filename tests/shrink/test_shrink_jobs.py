"""Clone and restore onto disks smaller than the source's partitions (issue 16): the factory's
GPT disk (BIOS boot, ESP, MSR, NTFS with a Windows-like tree, ext4, swap, unknown) and its MBR
disk (FAT16, NTFS, logical ext3 and FAT12), onto targets of 60 % and 45 % of the source, through
the CLI; every file as recorded, fsck clean, identities kept, the source unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.engine.inspect import inspect_disk
from clonebay.system.run import run
from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_copy, sparse_file
from tests.diskcheck import sha256_range
from tests.shrink.checks import assert_shrunk_disk

SECTOR = 512


def _target(tmp_path: Path, built: disks.BuiltDisk, percent: int) -> Path:
    return sparse_file(tmp_path / "target.img", built.size * percent // 100 // SECTOR * SECTOR)


@pytest.mark.parametrize("percent", [60, 45])
@pytest.mark.parametrize("kind", ["gpt", "mbr"])
def test_clone_onto_smaller(
    roomy: dict[str, tuple[disks.BuiltDisk, str]],
    kind: str,
    percent: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    built, digest = roomy[kind]
    target = _target(tmp_path, built, percent)
    assert cli.main(["clone", "--dry-run", str(built.path), str(target)]) == 0
    plan = capsys.readouterr().out
    assert "shrunk (least" in plan and "copy-on-write view" in plan, plan
    assert cli.main(["clone", "--yes", "--json", str(built.path), str(target)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    said = json.dumps(result)
    assert "shrunk from" in said and "the source was not written" in said, said
    assert_shrunk_disk(target, built, tmp_path)
    assert sha256_range(built.path, 0, built.size) == digest, "the source was written"


@pytest.mark.parametrize("percent", [60, 45])
@pytest.mark.parametrize("kind", ["gpt", "mbr"])
def test_restore_onto_smaller(
    roomy: dict[str, tuple[disks.BuiltDisk, str]],
    roomy_images: dict[str, Path],
    kind: str,
    percent: int,
    tmp_path: Path,
) -> None:
    built, _ = roomy[kind]
    image = roomy_images[kind]
    manifest = (image / "manifest.json").read_bytes()
    target = _target(tmp_path, built, percent)
    with open(target, "r+b") as f:  # old data everywhere: only what the restore writes counts
        for at in range(0, target.stat().st_size, 16 << 20):
            f.seek(at)
            f.write(b"old data" * 512)
    assert cli.main(["restore", "--yes", "--verify", str(image), str(target)]) == 0
    assert_shrunk_disk(target, built, tmp_path)
    assert (image / "manifest.json").read_bytes() == manifest, "the image changed"


def test_swap_is_made_anew_smaller_keeping_its_identity(tmp_path: Path) -> None:
    """A 512 MiB swap beside an ext4 of 512 MiB, onto a disk of 60 %: the swap gets its share
    as a new swap area with the same UUID and label; the ext4's files are kept."""
    swap_vol = sparse_file(tmp_path / "swap.img", 512 << 20)
    run(["mkswap", "-L", "myswap", "-U", "8c6e1a7e-3d3b-4b0e-9b1a-2f5d6c7e8f90", str(swap_vol)])
    ext_vol = sparse_file(tmp_path / "ext.img", 512 << 20)
    run(["mkfs.ext4", "-q", "-F", "-L", "root", str(ext_vol)])
    source = sparse_file(tmp_path / "disk.img", (1024 + 2) << 20)
    run(["sgdisk", "-n1:0:+512M", "-t1:8304", "-n2:0:+512M", "-t2:8200", str(source)])
    sparse_copy(ext_vol, source, 1 << 20)
    sparse_copy(swap_vol, source, 513 << 20)
    target = sparse_file(tmp_path / "target.img", (1026 << 20) * 60 // 100 // 512 * 512)
    assert cli.main(["clone", "--yes", str(source), str(target)]) == 0
    after = inspect_disk(str(target))
    swap = next(pr for pr in after.partitions if pr.partition.number == 2)
    assert swap.volume is not None and swap.volume.fstype == "swap"
    assert swap.partition.size < 512 << 20
    assert (swap.volume.uuid, swap.volume.label) == (
        "8c6e1a7e-3d3b-4b0e-9b1a-2f5d6c7e8f90",
        "myswap",
    )
    blkid = run(["blkid", "-p", "-O", str(swap.partition.start), str(target)]).stdout.decode()
    assert 'TYPE="swap"' in blkid and "8c6e1a7e" in blkid
