"""Sorted, non-overlapping byte runs: the currency between filesystem maps and the copy engine.

Filesystem parsers produce runs in their own units (blocks, clusters) in any order; ``normalize``
turns any list of runs into the canonical form (sorted, overlaps and touching runs merged, empty
runs dropped). Everything else here takes and returns canonical tuples of ``Extent``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from clonebay.model import Extent


def normalize(runs: Iterable[Extent]) -> tuple[Extent, ...]:
    """Sort ``runs`` and merge overlapping or touching ones; drop empty runs."""
    out: list[Extent] = []
    for run in sorted(r for r in runs if r.length > 0):
        if out and run.start <= out[-1].end:
            last = out[-1]
            if run.end > last.end:
                out[-1] = Extent(last.start, run.end - last.start)
        else:
            out.append(run)
    return tuple(out)


def from_bitmap(bitmap: bytes, unit: int, count: int, base: int = 0) -> list[Extent]:
    """Runs of set bits (LSB first in each byte) of the first ``count`` bits, scaled by ``unit``.

    This is the bitmap convention of ext2/3/4 block bitmaps and NTFS $Bitmap. Bit ``i`` set means
    unit ``i`` is in use; the run covers bytes ``base + i * unit`` onward. Scans whole bytes at a
    time so a multi-GiB volume's bitmap is walked in well under a second.
    """
    runs: list[Extent] = []
    start = -1
    nbytes = (count + 7) // 8
    data = bitmap[:nbytes]
    i = 0
    while i < nbytes:
        byte = data[i]
        if (byte == 0xFF and start >= 0) or (byte == 0 and start < 0):
            # Skip a whole stretch of all-ones (inside a run) or all-zeros (outside one).
            fill = b"\xff" if byte == 0xFF else b"\x00"
            j = i + 1
            stride = 64
            while j + stride <= nbytes and data[j : j + stride] == fill * stride:
                j += stride
            while j < nbytes and data[j] == byte:
                j += 1
            i = j
            continue
        for bit in range(8):
            idx = i * 8 + bit
            if idx >= count:
                break
            if byte >> bit & 1:
                if start < 0:
                    start = idx
            elif start >= 0:
                runs.append(Extent(base + start * unit, (idx - start) * unit))
                start = -1
        i += 1
    if start >= 0:
        end = min(count, nbytes * 8)
        runs.append(Extent(base + start * unit, (end - start) * unit))
    return runs


def total(extents: Iterable[Extent]) -> int:
    """Sum of the lengths."""
    return sum(e.length for e in extents)


def clip(extents: Iterable[Extent], size: int) -> tuple[Extent, ...]:
    """Cut canonical ``extents`` to ``[0, size)``."""
    out = []
    for e in extents:
        if e.start >= size:
            break
        out.append(Extent(e.start, min(e.end, size) - e.start))
    return tuple(out)


def subtract(extents: Iterable[Extent], holes: Iterable[Extent]) -> tuple[Extent, ...]:
    """The parts of canonical ``extents`` not covered by ``holes`` (any order)."""
    hole_list = normalize(holes)
    out: list[Extent] = []
    h = 0
    for e in extents:
        pos = e.start
        while h < len(hole_list) and hole_list[h].end <= pos:
            h += 1
        k = h
        while pos < e.end:
            if k >= len(hole_list) or hole_list[k].start >= e.end:
                out.append(Extent(pos, e.end - pos))
                break
            hole = hole_list[k]
            if hole.start > pos:
                out.append(Extent(pos, hole.start - pos))
            pos = max(pos, hole.end)
            k += 1
    return tuple(out)


def intersect(a: Iterable[Extent], b: Iterable[Extent]) -> tuple[Extent, ...]:
    """Bytes covered by both canonical lists."""
    la, lb = list(a), list(b)
    out: list[Extent] = []
    i = j = 0
    while i < len(la) and j < len(lb):
        start = max(la[i].start, lb[j].start)
        end = min(la[i].end, lb[j].end)
        if start < end:
            out.append(Extent(start, end - start))
        if la[i].end < lb[j].end:
            i += 1
        else:
            j += 1
    return tuple(out)


def align(extents: Iterable[Extent], unit: int, limit: int | None = None) -> tuple[Extent, ...]:
    """Widen every run outward to multiples of ``unit`` (clipped to ``limit``), then merge."""
    widened = []
    for e in extents:
        start = e.start - e.start % unit
        end = -(-e.end // unit) * unit
        if limit is not None:
            end = min(end, limit)
        widened.append(Extent(start, end - start))
    return normalize(widened)


def split(extents: Iterable[Extent], chunk: int) -> Iterator[Extent]:
    """Cut runs into pieces of at most ``chunk`` bytes, aligned to ``chunk`` boundaries.

    Aligned boundaries mean the same byte always lands in the same chunk, whatever the runs
    around it, which lets identical chunks be found and stored once.
    """
    for e in extents:
        pos = e.start
        while pos < e.end:
            boundary = (pos // chunk + 1) * chunk
            end = min(boundary, e.end)
            yield Extent(pos, end - pos)
            pos = end


def shift(extents: Iterable[Extent], offset: int) -> tuple[Extent, ...]:
    """Move every run by ``offset`` bytes (partition-relative -> disk-relative)."""
    return tuple(Extent(e.start + offset, e.length) for e in extents)


def contains(outer: Iterable[Extent], inner: Iterable[Extent]) -> bool:
    """True when every byte of canonical ``inner`` is inside canonical ``outer``."""
    return not subtract(inner, outer)
