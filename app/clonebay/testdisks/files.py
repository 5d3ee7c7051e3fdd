"""Sparse files: make one of a given size; copy one into another at an offset, holes kept."""

from __future__ import annotations

import os
from pathlib import Path


def sparse_file(path: Path, size: int) -> Path:
    """Create (or truncate) ``path`` as a sparse file of ``size`` bytes, all zeros."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def data_runs(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data (non-hole) parts of an open file, by SEEK_DATA/SEEK_HOLE."""
    runs = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        runs.append((start, end - start))
        pos = end
    return runs


def sparse_copy(src: Path, dst: Path, offset: int = 0) -> None:
    """Write ``src`` into the existing file ``dst`` at byte ``offset``, skipping src's holes."""
    size = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        for start, length in data_runs(fin.fileno(), size):
            pos = start
            while pos < start + length:
                n = min(start + length - pos, 8 << 20)
                os.pwrite(fout.fileno(), os.pread(fin.fileno(), n, pos), offset + pos)
                pos += n
