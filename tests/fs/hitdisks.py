"""Small real volumes for the hit tests, filled with tagged files (tests/fs/tagged.py).

Each builder returns a ``Tagged`` volume: the image, and for every tagged file its number,
path and size. Files are written by the filesystems' own tools: ``mke2fs -d`` and ``debugfs
-w`` for ext, an ntfs-3g FUSE mount for NTFS, mtools for FAT. Fragmentation is made the way
it happens: small files written, every other one deleted, then a large file written into the
holes.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.system.run import run
from clonebay.testdisks import ext as extdisk
from clonebay.testdisks import fat as fatdisk
from clonebay.testdisks import ntfs as ntfsdisk
from clonebay.testdisks.files import sparse_file
from tests.fs import tagged

MiB = 1 << 20
FSINFO_NEXT_FREE = 512 + 492  # FSI_Nxt_Free in the FSInfo sector (sector 1, as mkfs.fat puts it)


@dataclass
class Tagged:
    """A volume image and the tagged files on it (number -> path, number -> size)."""

    image: Path
    names: dict[int, str] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)

    def add(self, number: int, path: str, size: int) -> bytes:
        self.names[number], self.sizes[number] = path, size
        return tagged.content(number, size)

    def number(self, path: str) -> int:
        return next(n for n, p in self.names.items() if p == path)

    def expected(self, bad: list[tuple[int, int]]) -> dict[str, tuple[tuple[int, int], ...]]:
        return tagged.expected_hits(tagged.locate(self.image), self.names, self.sizes, bad)

    def interesting_ranges(self, tail: str = "/docs/report.pdf") -> list[tuple[int, int]]:
        """Unreadable ranges in the middle of /big.bin, across two files, on both sides of a
        fragment boundary of /frag.bin, and a few bytes in the last sector of ``tail``."""
        where = tagged.locate(self.image)
        big = tagged.sectors_of(where, self.number("/big.bin"))
        frag = tagged.sectors_of(where, self.number("/frag.bin"))
        jump = next(k for k in range(len(frag) - 1) if frag[k + 1] != frag[k] + tagged.SECTOR)
        linked = self.number("/docs/notes.txt")  # hard-linked on ext: two names
        cross = min(  # the closest pair of sectors of two files: only slack between them
            (
                (a, b)
                for (a, (na, _)), (b, (nb, _)) in itertools.pairwise(sorted(where.items()))
                if na != nb and max(na, nb) < 1000 and linked not in (na, nb)
            ),
            key=lambda pair: pair[1] - pair[0],
        )
        last = tagged.sectors_of(where, self.number(tail))[-1]
        return [
            (big[len(big) // 2] + 7, 5000),
            (cross[0] + 100, cross[1] - cross[0] + 200),
            (frag[jump] + 300, 212),
            (frag[jump + 1], 100),
            (last + 5, 10),
        ]


def _fill(vol: Tagged, root: Path, files: dict[int, tuple[str, int]]) -> None:
    for number, (path, size) in files.items():
        host = root / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(vol.add(number, path, size))


def common_files() -> dict[int, tuple[str, int]]:
    """The files every volume gets: a few documents, a big file, a folder of many entries."""
    files = {
        1: ("/docs/report.pdf", 40_000),
        2: ("/docs/notes.txt", 100_000),
        3: ("/big.bin", 8 * MiB),
        4: ("/Windows/System32/config/SYSTEM", 300_000),
    }
    for i in range(600):
        files[100 + i] = (f"/many/entry-{i:04d}.txt", 700)
    return files


def build_ext(work: Path, variant: str, size: int = 96 * MiB) -> Tagged:
    """An ext volume of ``variant`` (testdisks.ext.VARIANTS, plus "-g 4096" for several
    groups) with the common files, a hard link, and a fragmented ``/frag.bin``."""
    root = work / "root"
    image = work / f"{variant}.img"
    vol = Tagged(image)
    _fill(vol, root, common_files())
    (root / "docs/notes-link.txt").hardlink_to(root / "docs/notes.txt")
    spec = extdisk.VARIANTS[variant]
    sparse_file(image, size)
    run([spec.program, "-q", "-F", *spec.args, "-g", "4096", "-d", str(root), str(image)])
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small", Path(tmp) / "big"
        commands = ["mkdir /pieces"]
        for i in range(120):
            small.with_suffix(f".{i}").write_bytes(vol.add(1000 + i, f"/pieces/p{i:03d}", 3000))
            commands.append(f"write {small.with_suffix(f'.{i}')} /pieces/p{i:03d}")
        commands += [f"rm /pieces/p{i:03d}" for i in range(0, 120, 2)]
        big.write_bytes(vol.add(5, "/frag.bin", 900_000))
        commands.append(f"write {big} /frag.bin")
        extdisk.debugfs(image, commands, write=True)
    for i in range(0, 120, 2):
        del vol.names[1000 + i], vol.sizes[1000 + i]
    return vol


def build_fat(work: Path, bits: int, size: int = 64 * MiB, cluster: int = 2048) -> Tagged:
    """A FAT volume with the common files (the big one smaller on FAT12) and a fragmented
    ``/frag.bin``."""
    image = work / f"fat{bits}.img"
    vol = Tagged(image)
    root = work / "root"
    files = common_files()
    if bits == 12:
        files = {n: (p, min(s, 600_000)) for n, (p, s) in files.items() if n < 100 + 40}
    fatdisk.make_fat(image, size, bits, cluster_size=cluster)
    pieces = {1000 + i: (f"/pieces/p{i:03d}.bin", 3000) for i in range(60)}
    _fill(vol, root, {**files, **pieces})
    fatdisk.copy_files(image, root, [p.lstrip("/") for p, _ in files.values()])
    fatdisk.copy_files(image, root, [p.lstrip("/") for p, _ in pieces.values()])
    doomed = [pieces[1000 + i][0].lstrip("/") for i in range(0, 60, 2)]
    fatdisk.delete(image, doomed)
    for i in range(0, 60, 2):
        del vol.names[1000 + i], vol.sizes[1000 + i]
    if bits == 32:  # forget FSInfo's next-free hint, so mtools fills the holes from the start
        with open(image, "r+b") as f:
            f.seek(FSINFO_NEXT_FREE)
            f.write(b"\xff\xff\xff\xff")
    frag = {5: ("/frag.bin", 200_000)}
    _fill(vol, root, frag)
    fatdisk.copy_files(image, root, ["frag.bin"])
    return vol


STREAM = "Zone.Identifier"


def build_ntfs(work: Path, size: int = 96 * MiB) -> Tagged:
    """An NTFS volume (mkntfs, files written through an ntfs-3g mount) with the common files,
    a named stream on /docs/report.pdf, and a fragmented ``/frag.bin``."""
    image = work / "ntfs.img"
    vol = Tagged(image)
    ntfsdisk.make_ntfs(image, size, label="HITS")
    with ntfsdisk.mounted(image) as mnt:
        _fill(vol, mnt, common_files())
        os.setxattr(
            mnt / "docs/report.pdf",
            ntfsdisk.STREAM_PREFIX + STREAM,
            vol.add(6, f"/docs/report.pdf:{STREAM}", 20_000),
        )
        pieces = {1000 + i: (f"/pieces/p{i:03d}", 3000) for i in range(120)}
        _fill(vol, mnt, pieces)
    with ntfsdisk.mounted(image) as mnt:
        # A filler leaves ~40 clusters free at the end, so /frag.bin (74 clusters) has to
        # take the one-cluster holes the deleted pieces leave.
        stat = os.statvfs(mnt)
        filler = (stat.f_bavail - 40) * stat.f_frsize
        with open(mnt / "filler.bin", "wb") as f:
            for _ in range(filler // MiB):
                f.write(bytes(MiB))
            f.write(bytes(filler % MiB))
        for i in range(0, 120, 2):
            (mnt / f"pieces/p{i:03d}").unlink()
            del vol.names[1000 + i], vol.sizes[1000 + i]
    with ntfsdisk.mounted(image) as mnt:
        _fill(vol, mnt, {5: ("/frag.bin", 300_000)})
    return vol


def _interleave(root: Path, files: dict[str, bytes], piece: int = 16384) -> None:
    """Write files a piece of each in turn (flushed), so that their clusters alternate."""
    handles = {name: open(root / name, "wb") for name in files}  # noqa: SIM115
    try:
        for offset in range(0, max(map(len, files.values())), piece):
            for name, data in files.items():
                if offset < len(data):
                    handles[name].write(data[offset : offset + piece])
                    handles[name].flush()
                    os.fsync(handles[name].fileno())
    finally:
        for handle in handles.values():
            handle.close()
