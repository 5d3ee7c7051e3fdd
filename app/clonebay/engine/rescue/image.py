"""A rescued save: the bytes the later passes read become the image's next revision."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from clonebay.engine.regions import SourceRegion
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
    found = recovered.ranges()
    for region in regions:
        low, high = region.disk_offset, region.disk_offset + region.size
        ranges = [(max(a, low) - low, min(b, high) - low) for a, b in found if a < high and b > low]
        if ranges:

            def read(offset: int, length: int, base: int = low) -> bytes:
                return recovered.read(base + offset, length)

            reviser.replace(region.name, ranges, read)
    return reviser.commit(note, warnings)
