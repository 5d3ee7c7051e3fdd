"""Check a disk image against the record of a built test disk: every filesystem clean by its own
fsck, every file hashing as recorded, raw partitions byte-identical, boot code kept."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from clonebay.testdisks import disks, ext, fat, ntfs
from clonebay.testdisks.files import sparse_file

CHECKERS: dict[str, tuple[Callable[[Path], None], Callable[[Path], dict[str, str]]]] = {
    "ext3": (ext.fsck, ext.file_hashes),
    "ext4": (ext.fsck, ext.file_hashes),
    "ntfs": (ntfs.fsck, ntfs.file_hashes),
    "fat12": (fat.fsck, fat.file_hashes),
    "fat16": (fat.fsck, fat.file_hashes),
    "fat32": (fat.fsck, fat.file_hashes),
}


def extract(disk: Path, start: int, size: int, dst: Path) -> Path:
    """Copy ``size`` bytes at ``start`` of ``disk`` into a new sparse file ``dst``."""
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


def assert_disk_matches(
    path: Path,
    built: disks.BuiltDisk,
    work: Path,
    layout: dict[int, tuple[int, int]] | None = None,
) -> None:
    """``path`` holds what ``built`` recorded, partition by partition. ``layout`` gives each
    partition's (start, size) on ``path`` when they differ from the source's (a grown clone)."""
    with open(path, "rb") as f:
        if built.boot_code:
            assert f.read(len(built.boot_code)) == built.boot_code, "boot code differs"
        if built.gap[1]:
            f.seek(built.gap[0])
            assert f.read(len(built.gap[1])) == built.gap[1], "post-MBR gap differs"
    for part in built.partitions:
        start, size = (layout or {}).get(part.number, (part.start, part.size))
        if part.content_sha256:
            assert size == part.size, f"raw partition {part.number} changed size"
            got = sha256_range(path, start, part.size)
            assert got == part.content_sha256, f"raw partition {part.number} differs"
            continue
        if part.fstype not in CHECKERS:
            continue
        fsck, file_hashes = CHECKERS[part.fstype]
        image = extract(path, start, size, work / f"p{part.number}.img")
        try:
            fsck(image)
            assert part.tree is not None
            assert file_hashes(image) == part.tree.files, f"files of {part.fstype} differ"
        finally:
            image.unlink()


def assert_grown_disk(path: Path, built: disks.BuiltDisk, work: Path) -> dict[int, tuple[int, int]]:
    """``path`` holds ``built`` restored onto a larger disk with its partitions grown: every
    file and raw partition as recorded at the new places, the disk's identity kept, at least one
    partition grown and each grown filesystem filling its partition, the GPT valid. Returns the
    new layout (partition number -> (start, size))."""
    from clonebay.engine.inspect import inspect_disk
    from clonebay.system.run import output

    original = inspect_disk(str(built.path))
    restored = inspect_disk(str(path))
    layout = {p.number: (p.start, p.size) for p in restored.table.partitions}
    assert_disk_matches(path, built, work, layout)
    assert restored.table.disk_id == original.table.disk_id
    grown = [
        pr
        for pr, old in zip(restored.partitions, original.partitions, strict=True)
        if pr.partition.size > old.partition.size and pr.partition.kind != "extended"
    ]
    assert grown, "nothing grew"
    for pr in grown:  # the filesystem fills its grown partition
        assert pr.volume is not None
        assert pr.partition.size - pr.volume.size < 2 << 20, pr
        assert pr.volume.fstype in ("ext3", "ext4", "ntfs")
    if restored.table.kind == "gpt":
        assert "No problems found" in output(["sgdisk", "-v", str(path)])
    return layout
