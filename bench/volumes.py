"""The bench volumes: one ext4 and one NTFS filesystem of N GiB, each about half full, built once
per work folder and reused by every bench script (same bytes for every tool in every run).

Each volume is a bare filesystem image (no partition table): clonebay probes an unpartitioned
device as one volume, and partclone, ntfsclone, e2image and dd all take the same file, so every
tool reads exactly the same bytes. The content is ``tree.usr_tree`` (ext4) or
``tree.windows_tree`` (NTFS) — tens of thousands of small mixed files — plus one big random file
sized so that the filesystem's used space reaches about half of the volume.

The builders leave the free space as holes in a sparse file; reading a hole costs no I/O, which
would flatter every tool that reads free space (dd). So by default the holes are filled with
written zeros, as free space on a real disk is physical blocks (``--sparse-source`` keeps them).

A finished volume is recorded next to it as ``<name>.json``; an image without that record is an
interrupted build and is built again.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from clonebay.testdisks import ext, ntfs, tree

GIB = 1 << 30
MIB = 1 << 20
FILL = 0.5  # target fraction of the volume in use
PARTCLONE = {"ext4": "partclone.extfs", "ntfs": "partclone.ntfs"}


@dataclass(frozen=True)
class BenchVolume:
    """A built bench volume and what partclone says is in use on it."""

    fstype: str  # "ext4" or "ntfs"
    path: str
    size: int
    used: int  # bytes partclone -D marks as used (the common denominator for MB/s)
    files: int
    big_file: int
    sparse: bool
    build_seconds: float

    @property
    def partclone(self) -> str:
        return PARTCLONE[self.fstype]


def domain_used(image: Path, tool: str) -> int:
    """Bytes ``tool -D`` (partclone's ddrescue domain map) marks as used ('+')."""
    with tempfile.TemporaryDirectory() as tmp:
        domain = Path(tmp) / "domain"
        subprocess.run(
            [tool, "-D", "-q", "-s", str(image), "-o", str(domain)],
            check=True,
            capture_output=True,
        )
        lines = [ln for ln in domain.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    used = 0
    for line in lines[1:]:  # the first data line is the current position, not a run
        _pos, size, status = line.split()[:3]
        if status == "+":
            used += int(size, 16)
    return used


def on_disk_bytes(paths: list[Path]) -> int:
    """Allocated bytes of files (what they take on the host disk; holes excluded)."""
    return sum(p.stat().st_blocks * 512 for p in paths)


def _file_bytes(root: Path, names: list[str], cluster: int) -> int:
    """Bytes the files take on a filesystem with ``cluster``-byte allocation units."""
    total = 0
    for rel in names:
        size = (root / rel).stat().st_size
        total += -(-size // cluster) * cluster
    return total


def _fill_holes(path: Path) -> None:
    """Rewrite ``path`` with every hole replaced by written zeros (free space as on a disk)."""
    full = path.with_suffix(".full")
    subprocess.run(["cp", "--sparse=never", str(path), str(full)], check=True)
    os.replace(full, path)


def _build_ext4(image: Path, size: int, work: Path) -> tuple[int, int]:
    empty = work / "empty.img"
    ext.build_ext(empty, size, tree.Tree(_empty_dir(work)), variant="ext4")
    overhead = domain_used(empty, PARTCLONE["ext4"])
    empty.unlink()
    files = tree.usr_tree(work / "usr", files=40_000, big_file=0)
    small = _file_bytes(files.root, list(files.files), 4096)
    big = max(0, int(size * FILL) - overhead - small) // MIB * MIB
    files.add_random_file("var/big/random.bin", big, random.Random(11))
    ext.build_ext(image, size, files, variant="ext4", label="benchroot")
    return files.file_count, big


def _build_ntfs(image: Path, size: int, work: Path) -> tuple[int, int]:
    empty = work / "empty.img"
    ntfs.make_ntfs(empty, size, label="Windows")
    overhead = domain_used(empty, PARTCLONE["ntfs"])
    empty.unlink()
    files = tree.windows_tree(work / "win", files=20_000, pagefile=0)
    # Files under ~700 bytes stay resident in their MFT record; each file adds a 1 KiB record.
    small = _file_bytes(files.root, list(files.files), 4096) + 1024 * files.file_count
    big = max(0, int(size * FILL) - overhead - small) // MIB * MIB
    files.add_random_file("pagefile.sys", big, random.Random(12))
    ntfs.build_ntfs(image, size, files, label="Windows", start_sector=2048)
    return files.file_count, big


def _empty_dir(work: Path) -> Path:
    root = work / "empty"
    root.mkdir(parents=True, exist_ok=True)
    return root


BUILDERS = {"ext4": _build_ext4, "ntfs": _build_ntfs}


def volume(fstype: str, size_gib: int, work: Path, *, sparse: bool = False) -> BenchVolume:
    """The bench volume of ``fstype`` and ``size_gib`` GiB in ``work``/volumes (shared by every
    bench script given the same ``work``), built if missing."""
    work = work.resolve() / "volumes"
    work.mkdir(parents=True, exist_ok=True)
    name = f"{fstype}-{size_gib}g{'-sparse' if sparse else ''}"
    image, record = work / f"{name}.img", work / f"{name}.json"
    if image.exists() and record.exists():
        return BenchVolume(**json.loads(record.read_text()))
    record.unlink(missing_ok=True)
    size = size_gib * GIB
    started = time.monotonic()
    partial = work / f"{name}.building"
    with tempfile.TemporaryDirectory(dir=work, prefix=f"build-{name}-") as tmp:
        count, big = BUILDERS[fstype](partial, size, Path(tmp))
    if not sparse:
        _fill_holes(partial)
    os.replace(partial, image)
    vol = BenchVolume(
        fstype=fstype,
        path=str(image),
        size=size,
        used=domain_used(image, PARTCLONE[fstype]),
        files=count,
        big_file=big,
        sparse=sparse,
        build_seconds=round(time.monotonic() - started, 1),
    )
    record.write_text(json.dumps(asdict(vol), indent=2) + "\n")
    return vol


def remove_tree(path: Path) -> None:
    """Remove a file or folder if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
