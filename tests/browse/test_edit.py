"""clonebay edit: add and delete files on ext4 and NTFS (through the mounted tree) and on FAT
(mtools on the writable partition file), commit, restore the image to a disk: every filesystem
is clean by its own fsck, the added files are there, the deleted ones gone, every other file
hashes as before. Without --commit the image stays byte-identical."""

from __future__ import annotations

import hashlib
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.imaging.reader import ImageReader
from clonebay.testdisks import fat
from tests.browse.conftest import Saved, needs_root
from tests.diskcheck import CHECKERS, extract

pytestmark = [needs_root, pytest.mark.root]


def image_files(image: Path) -> dict[str, str]:
    """Every file of an image directory and the sha256 of its bytes."""
    return {
        p.relative_to(image).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(image.rglob("*"))
        if p.is_file()
    }


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_edit_commit_restore(
    saved_images: dict[str, Saved],
    image_copy: Callable[[Path], Path],
    tmp_path: Path,
) -> None:
    built, original = saved_images["gpt"]
    image = image_copy(original)
    point = tmp_path / "edit"
    expected = {p.number: dict(p.tree.files) for p in built.partitions if p.tree is not None}
    rng = random.Random(5)
    assert cli.main(["edit", str(image), str(point)]) == 0
    try:
        root = point / "p5-clonebay"  # ext4
        big = rng.randbytes(12 << 20)
        (root / "added" / "deep").mkdir(parents=True)
        (root / "added" / "deep" / "big.bin").write_bytes(big)
        (root / "etc" / "added.conf").write_text("added = yes\n")
        (root / "etc" / "fstab").unlink()
        shutil.rmtree(root / "usr" / "share" / "doc")
        expected[5]["added/deep/big.bin"] = digest(big)
        expected[5]["etc/added.conf"] = digest(b"added = yes\n")
        del expected[5]["etc/fstab"]
        expected[5] = {k: v for k, v in expected[5].items() if not k.startswith("usr/share/doc/")}

        root = point / "p4-Windows"  # NTFS
        text = "Neu hinzugefügt – 新文件\n".encode()
        (root / "Users" / "Public" / "Documents" / "Ärger 新.txt").write_bytes(text)
        shutil.rmtree(root / "Windows" / "SysWOW64")
        expected[4]["Users/Public/Documents/Ärger 新.txt"] = digest(text)
        expected[4] = {
            k: v for k, v in expected[4].items() if not k.startswith("Windows/SysWOW64/")
        }

        esp = point / ".partitions" / "p2"  # FAT: mtools writes the partition file itself
        payload = tmp_path / "added-file.txt"
        payload.write_bytes(b"from mtools\n" * 1000)
        fat.mtools("mcopy", esp, str(payload), "::/EFI/added-file.txt")
        fat.mtools("mdel", esp, "::/EFI/debian/grub.cfg")
        expected[2]["EFI/added-file.txt"] = digest(payload.read_bytes())
        del expected[2]["EFI/debian/grub.cfg"]
    finally:
        assert cli.main(["umount", "--commit", "--yes", str(point)]) == 0

    assert cli.main(["verify", str(image)]) == 0
    with ImageReader(image) as reader:
        assert reader.manifest.revision == 1
        assert {r.name for r in reader.regions if r.index_revision} == {"p2", "p4", "p5"}

    target = tmp_path / "restored.img"
    assert cli.main(["restore", "--yes", "--verify", str(image), str(target)]) == 0
    for part in built.partitions:
        if part.content_sha256:  # raw partitions untouched by the edit
            continue
        if part.fstype not in CHECKERS:
            continue
        fsck, file_hashes = CHECKERS[part.fstype]
        volume = extract(target, part.start, part.size, tmp_path / f"p{part.number}.img")
        fsck(volume)
        assert file_hashes(volume) == expected[part.number], f"p{part.number} ({part.fstype})"
        volume.unlink()


def test_edit_without_commit_leaves_the_image_byte_identical(
    saved_images: dict[str, Saved],
    image_copy: Callable[[Path], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, original = saved_images["mbr"]
    image = image_copy(original)
    before = image_files(image)
    point = tmp_path / "edit"
    assert cli.main(["edit", str(image), str(point)]) == 0
    try:
        (point / "p5-clonebay" / "written.txt").write_text("never committed\n")
        shutil.rmtree(point / "p2-DATA" / "DIR0")
    finally:
        capsys.readouterr()
        assert cli.main(["umount", str(point)]) == 0
    said = capsys.readouterr().out
    found = re.search(r"; (\d+) changed chunks discarded, the image is unchanged", said)
    assert found is not None and int(found.group(1)) > 0, said
    assert image_files(image) == before
