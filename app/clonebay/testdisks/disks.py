"""Whole test disks: a GPT disk like a dual-boot PC and an MBR disk like an old one.

Each filesystem is built in its own sparse file by its builder (testdisks/ext.py, ntfs.py, fat.py,
swap.py), then copied, holes kept, into a sparse disk image partitioned with sgdisk or sfdisk.
The result records what each partition must hold, so tests can check a copy of the disk.

Sizes come from a ``Scale``: tests use a few hundred MiB, the demo a little more, bench/ several
GiB with the filesystems about half full.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.system.run import run
from clonebay.testdisks import ext, fat, ntfs, swap, tree
from clonebay.testdisks.files import sparse_copy, sparse_file

MIB = 1 << 20


@dataclass(frozen=True)
class Scale:
    """Partition sizes and tree sizes of the standard test disks."""

    esp: int = 100 * MIB
    ntfs: int = 300 * MIB
    ext: int = 500 * MIB
    swap: int = 32 * MIB
    unknown: int = 8 * MIB
    ntfs_files: int = 5_000
    pagefile: int = 64 * MIB
    usr_files: int = 20_000
    big_file: int = 200 * MIB
    mbr_fat16: int = 64 * MIB
    mbr_ntfs: int = 128 * MIB
    mbr_ext3: int = 128 * MIB
    mbr_fat12: int = 4 * MIB
    small_files: int = 300


TEST = Scale()
QUICK = Scale(
    ntfs=128 * MIB,
    ext=200 * MIB,
    ntfs_files=1_000,
    pagefile=8 * MIB,
    usr_files=2_000,
    big_file=16 * MIB,
    small_files=100,
)
BENCH = Scale(
    esp=260 * MIB,
    ntfs=4096 * MIB,
    ext=4096 * MIB,
    swap=256 * MIB,
    unknown=64 * MIB,
    ntfs_files=20_000,
    pagefile=1024 * MIB,
    usr_files=40_000,
    big_file=1536 * MIB,
)


@dataclass
class BuiltPartition:
    """One partition of a built disk and what it must hold."""

    number: int
    fstype: str  # what the prober must report: "fat32", "ntfs", "ext4", "swap", "unknown", ...
    start: int
    size: int
    tree: tree.Tree | None = None
    content_sha256: str = ""  # for raw partitions: sha256 of the whole partition


@dataclass
class BuiltDisk:
    path: Path
    table: str  # "gpt" or "msdos"
    size: int
    partitions: list[BuiltPartition] = field(default_factory=list)
    boot_code: bytes = b""
    gap: tuple[int, bytes] = (0, b"")  # (offset, bytes) written in the post-MBR gap


def _place(disk: Path, fs_image: Path, start: int) -> None:
    sparse_copy(fs_image, disk, start)
    fs_image.unlink()


def _random_partition(disk: Path, start: int, size: int, seed: int) -> str:
    """Fill a partition with random bytes (an unknown or encrypted-looking volume)."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(disk, "r+b") as f:
        f.seek(start)
        left = size
        while left:
            piece = rng.randbytes(min(left, 4 * MIB))
            f.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def gpt_disk(path: Path, scale: Scale = TEST, work: Path | None = None) -> BuiltDisk:
    """A GPT disk: BIOS boot (GRUB core.img-like bytes), FAT32 ESP, Microsoft reserved, NTFS
    with a Windows-like tree, ext4 with a /usr-like tree, swap, and an unknown random partition."""
    sizes = [
        ("bios", 1 * MIB, "ef02", "BIOS boot partition"),
        ("esp", scale.esp, "ef00", "EFI system partition"),
        ("msr", 16 * MIB, "0c01", "Microsoft reserved partition"),
        ("ntfs", scale.ntfs, "0700", "Basic data partition"),
        ("ext4", scale.ext, "8304", "Linux root"),
        ("swap", scale.swap, "8200", "Linux swap"),
        ("unknown", scale.unknown, "a502", "FreeBSD swap (unknown data)"),
    ]
    total = MIB + sum(s for _, s, _, _ in sizes) + MIB
    sparse_file(path, total)
    argv = ["sgdisk", "-U", "R"]
    for i, (_, size, code, name) in enumerate(sizes, start=1):
        argv += [f"-n{i}:0:+{size // 1024}K", f"-t{i}:{code}", f"-c{i}:{name}"]
    run([*argv, str(path)])
    disk = BuiltDisk(path, "gpt", total)
    start = MIB
    with tempfile.TemporaryDirectory(dir=work) as tmpdir:
        tmp = Path(tmpdir)
        for number, (kind, size, _, _) in enumerate(sizes, start=1):
            part = BuiltPartition(number, kind, start, size)
            image = tmp / f"p{number}.img"
            if kind == "bios":
                part.fstype = "unknown"
                part.content_sha256 = _random_partition(path, start, size, seed=number)
            elif kind == "esp":
                part.tree = tree.efi_tree(tmp / "efi")
                fat.build_fat(
                    image, size, part.tree, bits=32, label="EFI", start_sector=start // 512
                )
                part.fstype = "fat32"
                _place(path, image, start)
            elif kind == "msr":
                part.fstype = "empty-msr"
            elif kind == "ntfs":
                part.tree = tree.windows_tree(tmp / "win", scale.ntfs_files, scale.pagefile)
                ntfs.build_ntfs(image, size, part.tree, label="Windows", start_sector=start // 512)
                _place(path, image, start)
            elif kind == "ext4":
                part.tree = tree.usr_tree(tmp / "usr", scale.usr_files, scale.big_file)
                ext.build_ext(image, size, part.tree, variant="ext4")
                _place(path, image, start)
            elif kind == "swap":
                swap.build_swap(image, size, label="swap")
                _place(path, image, start)
            else:
                part.content_sha256 = _random_partition(path, start, size, seed=number)
            disk.partitions.append(part)
            start += size
    return disk


def mbr_disk(path: Path, scale: Scale = TEST, work: Path | None = None) -> BuiltDisk:
    """An MBR disk with boot code: FAT16 (bootable), NTFS, and an extended partition holding
    two logical partitions, ext3 and FAT12."""
    fat16, ntfs_size = scale.mbr_fat16, scale.mbr_ntfs
    ext3, fat12 = scale.mbr_ext3, scale.mbr_fat12
    # Logical partitions each need one EBR sector in front: keep 1 MiB gaps, as fdisk does.
    total = MIB + fat16 + ntfs_size + MIB + ext3 + MIB + fat12 + MIB
    sparse_file(path, total)
    script = (
        "label: dos\nlabel-id: 0x2b1e7a5c\n"
        f"start=2048, size={fat16 // 512}, type=6, bootable\n"
        f"size={ntfs_size // 512}, type=7\n"
        "type=5\n"
        f"size={ext3 // 512}, type=83\n"
        f"size={fat12 // 512}, type=1\n"
    )
    run(["sfdisk", "-q", str(path)], input_bytes=script.encode())
    rng = random.Random(7)
    boot_code = rng.randbytes(440)
    core_img = rng.randbytes(30 << 10)  # like GRUB's core.img in the post-MBR gap
    with open(path, "r+b") as f:
        f.write(boot_code)
        f.seek(512)
        f.write(core_img)
    disk = BuiltDisk(path, "msdos", total, boot_code=boot_code, gap=(512, core_img))
    starts = _sfdisk_starts(path)
    with tempfile.TemporaryDirectory(dir=work) as tmpdir:
        tmp = Path(tmpdir)
        layout = [
            (1, "fat16", fat16),
            (2, "ntfs", ntfs_size),
            (5, "ext3", ext3),
            (6, "fat12", fat12),
        ]
        for number, kind, size in layout:
            start = starts[number]
            image = tmp / f"p{number}.img"
            part = BuiltPartition(number, kind, start, size)
            files = tree.small_tree(tmp / f"t{number}", scale.small_files, seed=number)
            part.tree = files
            if kind.startswith("fat"):
                fat.build_fat(
                    image,
                    size,
                    files,
                    bits=int(kind[3:]),
                    label=kind.upper(),
                    start_sector=start // 512,
                )
            elif kind == "ntfs":
                ntfs.build_ntfs(image, size, files, label="DATA", start_sector=start // 512)
            else:
                ext.build_ext(image, size, files, variant="ext3")
            _place(path, image, start)
            disk.partitions.append(part)
    return disk


def _sfdisk_starts(path: Path) -> dict[int, int]:
    """Partition number -> start byte, as sfdisk laid them out."""
    table = json.loads(run(["sfdisk", "--json", str(path)]).stdout)["partitiontable"]
    prefix = str(path)
    return {
        int(p["node"].removeprefix(prefix)): int(p["start"]) * int(table["sectorsize"])
        for p in table["partitions"]
    }
