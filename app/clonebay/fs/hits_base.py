"""What an unreadable range hit: the report's data model and the book-keeping its mappers share.

A rescue copy leaves zeros where the source could not be read. ``fs/hits.py`` turns those
ranges into what a technician needs to know: which files lost which of their bytes, and which
filesystem structures are damaged. Each filesystem's mapper (``hits_ext``, ``hits_ntfs``,
``hits_fat``) walks its own structures and records what it finds in a ``HitBook``:

* ``pending`` holds the unreadable bytes nobody has claimed yet. A mapper ``take``s a region
  (a file's cluster run, an inode table) and gets back the unreadable bytes inside it, which
  are then no longer pending; owners found later cannot claim them twice. Whatever is still
  pending at the end is reported as ``unknown``.
* ``add`` files a finding under a (kind, name); findings under one name are merged, so a file
  hit in ten places is one ``Hit`` with ten ranges, and the hits come out in the order of the
  first volume byte each was found at.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from clonebay.fs import extents
from clonebay.model import Extent


class HitKind(enum.StrEnum):
    """What the unreadable bytes belonged to (a str: JSON and comparisons see the value)."""

    FILE = "file"  # ranges: byte ranges inside the file (or stream) that are lost
    DIRECTORY = "directory"  # ranges: byte ranges inside the directory's own data
    METADATA = "metadata"  # ranges: byte ranges of the volume
    FREE = "free"  # ranges: byte ranges of the volume that no file uses
    UNKNOWN = "unknown"  # ranges: byte ranges of the volume whose owner is not known


@dataclass(frozen=True)
class Hit:
    """One file, directory or structure that an unreadable range hit, and what it lost."""

    kind: HitKind
    name: str  # a path inside the volume, or a structure's name ("ext4 inode table of group 7")
    ranges: tuple[tuple[int, int], ...]  # (offset, length): in the file for files/directories,
    #                                      in the volume otherwise
    note: str = ""

    def describe(self) -> str:
        """One line for a report: what was hit, which bytes, and the note."""
        where = {HitKind.FILE: "of the file", HitKind.DIRECTORY: "of the directory"}.get(
            self.kind, "of the volume"
        )
        lost = sum(length for _, length in self.ranges)
        spans = ", ".join(f"{start}-{start + length - 1}" for start, length in self.ranges[:4])
        more = f" and {len(self.ranges) - 4} more ranges" if len(self.ranges) > 4 else ""
        text = f"{self.kind}: {self.name}"
        if self.ranges:
            text += f": {lost} bytes lost {where} (bytes {spans}{more})"
        return f"{text}; {self.note}" if self.note else text


def runs_of(ranges: Iterable[Extent]) -> tuple[tuple[int, int], ...]:
    return tuple((e.start, e.length) for e in extents.normalize(ranges))


def _overlaps(runs: Sequence[Extent], starts: Sequence[int], start: int, length: int) -> bool:
    i = bisect.bisect_right(starts, start + length - 1) - 1
    return length > 0 and i >= 0 and runs[i].end > start


class HitBook:
    """The unreadable bytes, those still to be explained, and the hits found so far."""

    def __init__(self, bad: Sequence[Extent]) -> None:
        self.bad: tuple[Extent, ...] = extents.normalize(bad)
        self._bad_starts = [e.start for e in self.bad]
        self.pending = self.bad
        self._starts = list(self._bad_starts)
        self._found: dict[tuple[HitKind, str], _Finding] = {}

    def unreadable(self, start: int, length: int) -> bool:
        """Does ``[start, start + length)`` hold unreadable bytes (zeros in the copy)?"""
        return _overlaps(self.bad, self._bad_starts, start, length)

    def overlaps(self, start: int, length: int) -> bool:
        """Does ``[start, start + length)`` hold unreadable bytes nobody has claimed yet?"""
        return _overlaps(self.pending, self._starts, start, length)

    def take(self, start: int, length: int) -> tuple[Extent, ...]:
        """The unclaimed unreadable bytes inside ``[start, start + length)``, now claimed.

        Only the pending runs the region touches are rebuilt; the rest is spliced around
        them, so a million small claims on a fragmented range stay cheap."""
        if not self.overlaps(start, length):
            return ()
        end = start + length
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        j = bisect.bisect_left(self._starts, end)
        touched = self.pending[i:j]
        region = (Extent(start, length),)
        got = extents.intersect(touched, region)
        kept = extents.subtract(touched, region)
        self.pending = self.pending[:i] + kept + self.pending[j:]
        self._starts[i:j] = [e.start for e in kept]
        return got

    def add(
        self, kind: HitKind, name: str, ranges: Iterable[Extent], *, at: int, note: str = ""
    ) -> None:
        """File ``ranges`` lost under (``kind``, ``name``); ``at`` is the first volume byte."""
        found = self._found.setdefault((kind, name), _Finding(at, len(self._found)))
        found.runs.extend(ranges)
        if note and note not in found.notes:
            found.notes.append(note)
        found.at = min(found.at, at)

    def claim(self, kind: HitKind, name: str, start: int, length: int, note: str = "") -> None:
        """``take`` a region of the volume and, if it held unreadable bytes, file them."""
        got = self.take(start, length)
        if got:
            self.add(kind, name, got, at=got[0].start, note=note)

    def hits(self) -> list[Hit]:
        """Every hit, in the order of the volume byte each was first found at (then the order
        they were found in)."""
        ordered = sorted(self._found.items(), key=lambda item: (item[1].at, item[1].order))
        out = []
        for (kind, name), found in ordered:
            ranges = runs_of(found.runs)
            note = "; ".join(found.notes) if ranges or found.notes else SLACK_NOTE
            out.append(Hit(kind, name, ranges, note))
        return out


@dataclass
class _Finding:
    at: int
    order: int
    runs: list[Extent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def file_ranges(got: Iterable[Extent], physical: int, logical: int, size: int) -> list[Extent]:
    """Volume bytes ``got`` of a run stored at byte ``physical`` and holding the file's bytes
    from ``logical`` on, as byte ranges of the file cut at its ``size`` (bytes past it are
    allocated slack that holds no data)."""
    out: list[Extent] = []
    for e in got:
        start = logical + e.start - physical
        end = min(start + e.length, size)
        if end > start:
            out.append(Extent(start, end - start))
    return out


MAX_DEPTH = 2048  # path components followed upward (PATH_MAX / 2): a loop ends there


def path_up(
    node: int, root: int, parent: Callable[[int], tuple[int, str] | None], unnamed: str
) -> str:
    """The path from ``root`` to ``node``, built upward: ``parent(n)`` gives (parent, name)
    or None; a part that cannot be named shows as ``unnamed.format(n)``, a loop as <loop>."""
    parts: list[str] = []
    seen = {node}
    while node != root:
        got = parent(node)
        if got is None or len(parts) >= MAX_DEPTH:
            parts.append(unnamed.format(node))
            break
        node, name = got
        parts.append(name)
        if node in seen:
            parts.append("<loop>")
            break
        seen.add(node)
    return "/" + "/".join(reversed(parts))


SLACK_NOTE = "only allocated space past the end of the file was hit: no data lost"
