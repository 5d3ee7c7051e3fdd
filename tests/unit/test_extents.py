"""Extent algebra checked against plain Python sets of byte offsets."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from clonebay.fs import extents
from clonebay.model import Extent

runs = st.lists(st.builds(Extent, st.integers(0, 300), st.integers(0, 40)), max_size=12)


def as_set(items: tuple[Extent, ...] | list[Extent]) -> set[int]:
    return {b for e in items for b in range(e.start, e.end)}


def is_canonical(items: tuple[Extent, ...]) -> bool:
    return all(e.length > 0 for e in items) and all(
        a.end < b.start for a, b in itertools.pairwise(items)
    )


@given(runs)
def test_normalize_keeps_bytes_and_is_canonical(items: list[Extent]) -> None:
    out = extents.normalize(items)
    assert as_set(out) == as_set(items)
    assert is_canonical(out)


@given(runs, runs)
def test_subtract_and_intersect_match_sets(a: list[Extent], b: list[Extent]) -> None:
    na, nb = extents.normalize(a), extents.normalize(b)
    assert as_set(extents.subtract(na, b)) == as_set(na) - as_set(nb)
    assert as_set(extents.intersect(na, nb)) == as_set(na) & as_set(nb)
    assert extents.contains(na, extents.intersect(na, nb))


@given(runs, st.sampled_from([1, 4, 16, 64]))
def test_align_covers_and_is_aligned(items: list[Extent], unit: int) -> None:
    out = extents.align(extents.normalize(items), unit)
    assert as_set(items) <= as_set(out)
    assert all(e.start % unit == 0 and e.length % unit == 0 for e in out)


@given(runs, st.sampled_from([1, 7, 32]))
def test_split_pieces_stay_inside_chunks(items: list[Extent], chunk: int) -> None:
    norm = extents.normalize(items)
    pieces = list(extents.split(norm, chunk))
    assert as_set(pieces) == as_set(norm)
    assert all(p.start // chunk == (p.end - 1) // chunk for p in pieces)


@given(st.binary(max_size=64), st.integers(0, 600), st.sampled_from([1, 512, 4096]))
def test_from_bitmap_matches_bit_by_bit(bitmap: bytes, count: int, unit: int) -> None:
    count = min(count, len(bitmap) * 8)
    expected = {
        b
        for i in range(count)
        if bitmap[i // 8] >> (i % 8) & 1
        for b in range(i * unit, (i + 1) * unit)
    }
    out = extents.normalize(extents.from_bitmap(bitmap, unit, count))
    assert as_set(out) == expected


def test_from_bitmap_long_runs() -> None:
    bitmap = b"\xff" * 1000 + b"\x00" * 1000 + b"\x0f"
    out = extents.from_bitmap(bitmap, 4096, len(bitmap) * 8, base=1024)
    assert out == [Extent(1024, 8000 * 4096), Extent(1024 + 16000 * 4096, 4 * 4096)]


def test_clip_and_shift() -> None:
    items = (Extent(0, 10), Extent(20, 10), Extent(40, 10))
    assert extents.clip(items, 25) == (Extent(0, 10), Extent(20, 5))
    assert extents.shift(items[:1], 100) == (Extent(100, 10),)
    assert extents.total(items) == 30
