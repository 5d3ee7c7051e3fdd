"""Truth to compare against: the filesystems' own tools, and copies made from our maps.

``partclone_used`` runs ``partclone.<fs> -D`` (its ddrescue domain map: '+' marks the bytes
partclone would copy). ``copy_extents`` copies only the given byte runs of an image into a
zero-filled sparse file of the same size: if our map is right, that copy is a whole filesystem.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from clonebay.fs import extents
from clonebay.model import Extent
from clonebay.system.run import run

PARTCLONE = {"ext": "partclone.extfs", "ntfs": "partclone.ntfs", "fat": "partclone.fat"}


def parse_domain(text: str) -> tuple[Extent, ...]:
    """The '+' runs of a ddrescue domain/map file (partclone -D output)."""
    runs = []
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    for line in lines[1:]:  # the first data line is the current position
        pos, size, status = line.split()[:3]
        if status == "+":
            runs.append(Extent(int(pos, 16), int(size, 16)))
    return extents.normalize(runs)


def partclone_used(image: Path, family: str) -> tuple[Extent, ...]:
    """Byte runs partclone.<family> considers used in the filesystem image ``image``."""
    with tempfile.TemporaryDirectory() as tmp:
        domain = Path(tmp) / "domain"
        run([PARTCLONE[family], "-D", "-s", str(image), "-o", str(domain), "-q"])
        return parse_domain(domain.read_text())


def copy_extents(src: Path, dst: Path, runs: Iterable[Extent]) -> None:
    """Make ``dst`` a sparse zero file the size of ``src`` holding only ``runs`` of it."""
    size = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.truncate(size)
        for run_ in runs:
            pos = run_.start
            while pos < run_.end:
                n = min(run_.end - pos, 8 << 20)
                data = os.pread(fin.fileno(), n, pos)
                os.pwrite(fout.fileno(), data, pos)
                pos += n


def assert_covers(
    ours: tuple[Extent, ...], oracle: tuple[Extent, ...], slack: float = 0.01
) -> None:
    """Our used set contains the oracle's and is at most ``slack`` larger."""
    missing = extents.subtract(oracle, ours)
    assert not missing, f"map misses {extents.total(missing)} used bytes, first {missing[:5]}"
    assert extents.total(ours) <= extents.total(oracle) * (1 + slack) + 65536, (
        f"map is {extents.total(ours)} bytes, oracle {extents.total(oracle)}"
    )
