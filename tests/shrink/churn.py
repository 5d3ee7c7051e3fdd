"""A disk whose filesystems were used for a while: files written until the volume was nearly
full, most deleted (the early ones first), others written into the holes and past them, so
that the survivors lie scattered up to the end of the volume and NTFS's free space is in
hundreds of pieces. A shrink must move every one of them below the new end.

The disk: GPT, 1 MiB aligned; p1 NTFS 512 MiB, p2 ext4 512 MiB. Hashes of every surviving
file are recorded from the mounted volumes after the churn, and compared after the copy."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.system.run import run
from clonebay.testdisks import ntfs
from clonebay.testdisks.files import sparse_copy, sparse_file

MIB = 1 << 20
PART = 512 * MIB


@dataclass
class ChurnedDisk:
    path: Path
    size: int
    sha256: str
    files: dict[int, dict[str, str]] = field(default_factory=dict)  # partition -> path -> sha256
    starts: dict[int, int] = field(default_factory=dict)


def churn(root: Path, seed: int, fill: int) -> dict[str, str]:
    """Write ~``fill`` bytes of files into ``root``, delete most, write more; the hashes left."""
    rng = random.Random(seed)
    written: list[Path] = []
    total = 0
    n = 0
    while total < fill:
        size = rng.choice([64 << 10, 256 << 10, 1 * MIB, 3 * MIB])
        path = root / f"d{n % 17}" / f"f{n}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        written.append(path)
        total += size
        n += 1
    # the first two thirds mostly go, so what stays lies towards the end
    for i, path in enumerate(written):
        if (i < len(written) * 2 // 3 and i % 5 != 0) or (i % 3 == 1):
            path.unlink()
    for i in range(len(written) // 4):  # small files into the holes, scattered
        path = root / "late" / f"g{i}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.randbytes(rng.choice([4 << 10, 20 << 10, 100 << 10])))
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if rel.startswith("lost+found"):
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def churned_disk(path: Path, work: Path) -> ChurnedDisk:
    vol1, vol2 = work / "ntfs.img", work / "ext.img"
    ntfs.make_ntfs(vol1, PART, label="CHURNED", start_sector=2048)
    with ntfs.mounted(vol1) as mnt:
        files1 = churn(mnt, 11, PART * 85 // 100)
    sparse_file(vol2, PART)
    run(["mkfs.ext4", "-q", "-F", "-L", "churned", str(vol2)])
    mnt = work / "mnt"
    mnt.mkdir()
    run(["mount", str(vol2), str(mnt)])
    try:
        files2 = churn(mnt, 12, PART * 85 // 100)
    finally:
        run(["umount", str(mnt)])
    size = PART * 2 + 2 * MIB
    sparse_file(path, size)
    run(["sgdisk", "-n1:1M:+512M", "-t1:0700", "-n2:0:+512M", "-t2:8304", str(path)])
    sparse_copy(vol1, path, MIB)
    sparse_copy(vol2, path, MIB + PART)
    vol1.unlink()
    vol2.unlink()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(8 * MIB):
            digest.update(piece)
    disk = ChurnedDisk(path, size, digest.hexdigest())
    disk.files = {1: files1, 2: files2}
    disk.starts = {1: MIB, 2: MIB + PART}
    return disk
