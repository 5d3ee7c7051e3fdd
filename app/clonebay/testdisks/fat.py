"""FAT12/16/32 test images built without root: mkfs.fat on a sparse file, files put in with mtools.

mtools reads and writes a FAT image directly (``-i image@@offset``), so no loop device or vfat
module is needed. FAT has no symlinks, hard links or extended attributes: a Tree's symlinks and
xattrs are left out, and each hard link becomes an independent copy of its file (its content is
recorded in ``tree.files`` under both names, which is what reading the image back gives).

``FatImage.files`` is the truth a test compares against: path -> sha256 of every regular file
the image holds. ``file_hashes`` reads them back with ``mcopy -s``; ``fsck`` runs ``fsck.fat -n``
and treats any finding as a failure.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from clonebay.system.run import output, run
from clonebay.testdisks.files import sparse_file
from clonebay.testdisks.tree import Tree, efi_tree, mixed_bytes, small_tree, windows_tree

# C.UTF-8: under plain C, mtools turns non-ASCII long names into underscores.
MTOOLS_ENV = {
    "MTOOLS_SKIP_CHECK": "1",
    "MTOOLSRC": "/dev/null",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
}
ARGV_BATCH = 400  # files per mcopy/mmd call: few processes, argv far below ARG_MAX
MiB = 1 << 20


@dataclass(frozen=True)
class FatImage:
    """A FAT image file and the files it holds (path -> sha256)."""

    path: Path
    files: dict[str, str]
    fat_bits: int


def _target(image: Path, offset: int) -> str:
    return f"{image}@@{offset}" if offset else str(image)


def mtools(program: str, image: Path, *args: str, offset: int = 0) -> str:
    """Run one mtools program on ``image`` (a FAT volume at byte ``offset``)."""
    return output([program, "-i", _target(image, offset), *args], env=MTOOLS_ENV)


def make_fat(
    path: Path,
    size: int,
    fat_bits: int,
    *,
    cluster_size: int | None = None,
    label: str | None = None,
    volume_id: int | None = None,
    start_sector: int = 0,
) -> Path:
    """An empty FAT12/16/32 filesystem filling a new sparse file of ``size`` bytes;
    ``start_sector`` is the partition's start, recorded as the BPB's hidden sectors."""
    sparse_file(path, size)
    argv = ["mkfs.fat", "-F", str(fat_bits), "-h", str(start_sector)]
    if cluster_size is not None:
        argv += ["-s", str(cluster_size // 512)]
    if label is not None:
        argv += ["-n", label]
    if volume_id is not None:
        argv += ["-i", f"{volume_id:08X}"]
    run([*argv, str(path)])
    return path


def _batches(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), ARGV_BATCH):
        yield items[i : i + ARGV_BATCH]


def copy_files(image: Path, root: Path, names: Iterable[str], offset: int = 0) -> None:
    """Copy the regular files ``names`` (relative to ``root``) onto the image, folders first."""
    by_dir: dict[str, list[str]] = defaultdict(list)
    for name in sorted(names):
        by_dir[name.rpartition("/")[0]].append(name)
    dirs: set[str] = set()
    for folder in by_dir:
        parts = folder.split("/") if folder else []
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    existing = set(listing(image, offset))
    wanted = [f"::/{d}" for d in sorted(dirs) if f"{d}/" not in existing]
    for batch in _batches(wanted):
        mtools("mmd", image, *batch, offset=offset)
    for folder, files in by_dir.items():
        for batch in _batches(files):
            mtools("mcopy", image, *(str(root / f) for f in batch), f"::/{folder}/", offset=offset)


def copy_tree(image: Path, tree: Tree, offset: int = 0) -> None:
    """Put every regular file of ``tree`` on the image (symlinks and xattrs are skipped)."""
    copy_files(image, tree.root, tree.files, offset)


def listing(image: Path, offset: int = 0) -> list[str]:
    """Every path on the image, hidden ones too; folders end with '/'."""
    argv = ["mdir", "-i", _target(image, offset), "-/", "-a", "-b", "::/"]
    proc = run(argv, env=MTOOLS_ENV, check=False)
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0 and not (text == "" and b"not found" in proc.stderr):
        run(argv, env=MTOOLS_ENV)  # raise with the real error; an empty root is "not found"
    return [line[3:] for line in text.splitlines() if line.startswith("::/")]


def build_fat(
    path: Path,
    size: int,
    tree: Tree,
    *,
    bits: int,
    cluster_size: int | None = None,
    label: str | None = None,
    volume_id: int | None = None,
    start_sector: int = 0,
) -> FatImage:
    """mkfs.fat -F ``bits`` a sparse file of ``size`` bytes and copy ``tree`` onto it."""
    make_fat(
        path,
        size,
        bits,
        cluster_size=cluster_size,
        label=label,
        volume_id=volume_id,
        start_sector=start_sector,
    )
    copy_tree(path, tree)
    return FatImage(path, dict(tree.files), bits)


def build_fragmented(path: Path, work: Path, size: int = 32 * MiB, seed: int = 5) -> FatImage:
    """FAT16 with scattered files and free holes between them.

    Write small files, delete every other one, write bigger files (mtools allocates the first
    free cluster, so each of them is split over several holes), then delete every third of the
    big files so the free space is scattered too.
    """
    rng = random.Random(seed)
    first, second = Tree(work / "first"), Tree(work / "second")
    for i in range(240):
        first.add_file(f"FRAG/A{i:04d}.BIN", mixed_bytes(rng, rng.randint(3000, 20000)))
    for i in range(60):
        second.add_file(f"FRAG/B{i:04d}.BIN", mixed_bytes(rng, rng.randint(30000, 90000)))
    make_fat(path, size, 16, cluster_size=2048, label="FRAGMENTED")
    copy_tree(path, first)
    doomed = sorted(first.files)[::2]
    delete(path, doomed)
    copy_tree(path, second)
    doomed += sorted(second.files)[::3]
    delete(path, sorted(second.files)[::3])
    files = (first.files | second.files).items()
    return FatImage(path, {k: v for k, v in files if k not in doomed}, 16)


def delete(image: Path, names: list[str], offset: int = 0) -> None:
    """Delete files (paths relative to the volume root) with mdel."""
    for batch in _batches([f"::/{name}" for name in names]):
        mtools("mdel", image, *batch, offset=offset)


def fat12(path: Path, work: Path) -> FatImage:
    """4 MiB FAT12 (2 KiB clusters), a hundred small files."""
    return build_fat(path, 4 * MiB, small_tree(work / "t", files=120), bits=12, label="SMALL")


def fat16(path: Path, work: Path) -> FatImage:
    """128 MiB FAT16 with small files and one 20 MiB file."""
    tree = small_tree(work / "t", files=400, big_file=20 * MiB)
    return build_fat(path, 128 * MiB, tree, bits=16, label="FAT16")


def fat32(path: Path, work: Path) -> FatImage:
    """300 MiB FAT32 with small files and one 40 MiB file."""
    tree = small_tree(work / "t", files=600, big_file=40 * MiB)
    return build_fat(path, 300 * MiB, tree, bits=32, label="FAT32")


def esp(path: Path, work: Path) -> FatImage:
    """A 260 MiB EFI system partition (FAT32, label EFI) with boot loaders."""
    return build_fat(path, 260 * MiB, efi_tree(work / "t"), bits=32, label="EFI")


def fat32_long_names(path: Path, work: Path) -> FatImage:
    """300 MiB FAT32 with a Windows-like tree: long, non-ASCII names in deep folders."""
    tree = windows_tree(work / "t", files=600, pagefile=8 * MiB)
    return build_fat(path, 300 * MiB, tree, bits=32, label="WINDOWS")


def fat32_small_clusters(path: Path, work: Path) -> FatImage:
    """300 MiB FAT32 with 512-byte clusters: 600,000 FAT entries."""
    tree = small_tree(work / "t", files=300)
    return build_fat(path, 300 * MiB, tree, bits=32, cluster_size=512)


def fat16_big_clusters(path: Path, work: Path) -> FatImage:
    """512 MiB FAT16 with 64 KiB clusters (the largest Windows NT allows)."""
    tree = small_tree(work / "t", files=200)
    return build_fat(path, 512 * MiB, tree, bits=16, cluster_size=64 << 10)


# Variant name -> builder(image path, scratch folder). Sizes keep every variant's cluster count
# well inside its FAT type's range (mkfs.fat refuses or warns near the limits).
VARIANTS: dict[str, Callable[[Path, Path], FatImage]] = {
    "fat12": fat12,
    "fat16": fat16,
    "fat32": fat32,
    "esp": esp,
    "fragmented": build_fragmented,
    "fat32-long-names": fat32_long_names,
    "fat32-512b-clusters": fat32_small_clusters,
    "fat16-64k-clusters": fat16_big_clusters,
}


def hash_folder(root: Path) -> dict[str, str]:
    """path (relative, '/'-separated) -> sha256 of every regular file under ``root``."""
    hashes = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            full = Path(folder) / name
            digest = hashlib.sha256()
            with open(full, "rb") as f:
                while piece := f.read(1 << 20):
                    digest.update(piece)
            hashes[full.relative_to(root).as_posix()] = digest.hexdigest()
    return hashes


def file_hashes(image: Path, offset: int = 0) -> dict[str, str]:
    """Read every regular file back from the FAT volume at ``offset`` of ``image``."""
    with tempfile.TemporaryDirectory(prefix="clonebay-fat-") as tmp:
        if listing(image, offset):
            mtools("mcopy", image, "-s", "-Q", "::/*", tmp + "/", offset=offset)
        return hash_folder(Path(tmp))


def fsck(image: Path) -> None:
    """``fsck.fat -n`` on a bare FAT image: exit 0 and nothing reported but the summary line."""
    proc = run(["fsck.fat", "-n", str(image)], check=False)
    lines = proc.stdout.decode(errors="replace").splitlines()
    findings = [
        ln for ln in lines if not ln.startswith("fsck.fat ") and not ln.startswith(f"{image}: ")
    ]
    if proc.returncode != 0 or findings or proc.stderr.strip():
        raise AssertionError(
            f"fsck.fat -n {image} exited {proc.returncode}:\n"
            + "\n".join(lines + proc.stderr.decode(errors="replace").splitlines())
        )
