"""A rescued save: the bytes the later passes read become the image's next revision."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from clonebay.engine.regions import SourceRegion
from clonebay.engine.rescue.reader import split_at
from clonebay.engine.rescue.recovered import Recovered
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.revise import ImageReviser


def add_recovered(
    image: str,
    regions: Iterable[SourceRegion],
    recovered: Recovered,
    note: str,
    warnings: Sequence[str] = (),
) -> Manifest | None:
    """Replace the parts of the image's UNREADABLE records that ``recovered`` holds by frames,
    and add ``warnings`` to the manifest (one new revision, committed atomically); None when
    there is nothing to add."""
    reviser = ImageReviser(image)
    where = {r.name: r.disk_offset for r in regions}
    areas = [(r.name, r.disk_offset, r.size) for r in regions]
    found: dict[str, list[tuple[int, int]]] = {}
    for start, end in recovered.ranges():
        for name, offset, length in split_at(areas, start, end - start):
            found.setdefault(name, []).append((offset, offset + length))
    for name, ranges in found.items():

        def read(offset: int, length: int, base: int = where[name]) -> bytes:
            return recovered.read(base + offset, length)

        reviser.replace(name, ranges, read)
    return reviser.commit(note, warnings)
