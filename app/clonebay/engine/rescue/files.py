"""What the unreadable ranges of a rescue hit: fs/hits.py's answer for each region, as lines.

The filesystems are read from the source itself (read-only, as the copy read them); the
mapping never reads inside the unreadable ranges, so it costs the failing disk only reads of
sectors that answered before. Each line names the region and what was hit ("p2: file:
/Users/ana/thesis.docx: 4096 bytes lost of the file (bytes 81920-86015)", "p2: metadata: NTFS
$MFT records 118-122"); the lines go into the job's warnings, the image's manifest and the
TUI's Result.
"""

from __future__ import annotations

from collections.abc import Iterable

from clonebay.errors import ClonebayError
from clonebay.fs.hits import files_hit

PREFIX = "unreadable sectors hit "  # how a hit line starts among a job's warnings


def hit_lines(
    source: str,
    regions: Iterable[tuple[str, str, int]],
    bad: Iterable[tuple[str, int, int]],
) -> list[str]:
    """One line per thing hit: ``regions`` are (name, filesystem type, offset on the source),
    ``bad`` the unreadable (region, offset in it, length) ranges."""
    bad = list(bad)
    lines = []
    for name, fstype, offset in regions:
        ranges = [(at, length) for region, at, length in bad if region == name]
        if not ranges:
            continue
        if not fstype:
            lines.append(f"{PREFIX}{name}: no filesystem there (an area outside the partitions)")
            continue
        try:
            hits = files_hit(source, fstype, ranges, volume_offset=offset)
        except ClonebayError as exc:
            lines.append(f"{PREFIX}{name}: the files hit are not known: {exc.message}")
            continue
        lines += [f"{PREFIX}{name}: {hit.describe()}" for hit in hits]
    return lines
