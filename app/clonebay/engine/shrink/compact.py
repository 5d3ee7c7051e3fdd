"""``save --shrink``: an image of the source as the smallest disk that holds its data.

Every shrinkable partition is resized to its floor (its filesystem's minimum and headroom:
engine/layout/shrink.py) in a copy-on-write view, the others keep their size, and the
partitions close up in order, gaps and alignment kept. The image then records that compact
disk: its partition table (written by sfdisk into a sparse scratch file of the new size,
identities kept, over a copy of the source's boot code and post-MBR gap), the raw areas of
that file (boot code, the new GPT or MBR and EBRs, the backup GPT), and each partition's data
read from the source or, where the resizer changed it, from its overlay. Such an image is an
ordinary image of a smaller disk: it restores, streams and multicasts as any other, onto any
disk at least that large (and grows there, or shrinks further). The source is never written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from clonebay.engine.inspect import DiskReport, PartitionReport
from clonebay.engine.layout.plan import Grow, Plan, plan_layout, shrink_candidates, smallest_size
from clonebay.engine.layout.table_write import write_table
from clonebay.engine.pipeline import ReadTask
from clonebay.engine.regions import source_regions
from clonebay.engine.shrink import steps
from clonebay.engine.shrink.view import Base
from clonebay.errors import UsageError
from clonebay.fs import extents
from clonebay.system.directio import DirectFile
from clonebay.system.parttable import read_table
from clonebay.units import human_size

HEAD_COPY = 64 << 20  # at most this much of the source's head area (boot code, GRUB's gap)


def smallest_plan(report: DiskReport, scratch: str) -> Plan | None:
    """The Plan onto the smallest disk that holds the data; None when nothing can shrink."""
    table = report.table
    if report.whole_disk is not None or table.kind not in ("gpt", "msdos"):
        raise UsageError(f"save --shrink needs a partition table; {report.path} has none")
    volumes = {pr.partition.number: pr.volume for pr in report.partitions}
    parts = {pr.partition.number: pr.partition for pr in report.partitions}
    candidates = shrink_candidates(table, volumes)
    if not candidates:
        return None
    found = steps.minimums(
        {
            n: (Base(parts[n].size, disk=report.path, offset=parts[n].start), volumes[n])
            for n in candidates
        },
        scratch,
    )
    size = smallest_size(table, volumes, found)
    if size >= table.disk_size:
        return None
    return plan_layout(table, volumes, size, Grow.PROPORTIONAL, report.path, minimums=found)


class Compacted:
    """The compact disk being saved: its report (table and volumes), its regions, the reads."""

    def __init__(self, report: DiskReport, plan: Plan, scratch: str) -> None:
        self.source = report
        self.fds: list[int] = []
        self.shrunk = steps.shrink_all(
            plan, lambda m: Base(m.source.size, disk=report.path, offset=m.source.start), scratch
        )
        self.plan = self.shrunk.plan
        try:
            self.work = Path(tempfile.mkdtemp(prefix="compact-", dir=steps.scratch_dir(scratch)))
            self.disk = str(self.work / "disk.img")
            self._lay_out()
            table = read_table(self.disk)
            by_number = {m.number: m for m in self.plan.moves}
            partitions = tuple(
                PartitionReport(p, by_number[p.number].volume if p.number in by_number else None)
                for p in table.partitions
            )
            self.report = DiskReport(report.path, table, partitions, None, report.warnings)
            self.regions = source_regions(self.report)
            self.disk_fd = self._open(self.disk)
            self.overlays = {
                name: (self._open(str(view.changes.overlay)), view.changes)
                for name, view in self.shrunk.views.items()
            }
        except BaseException:
            self.close()
            raise

    def _open(self, path: str) -> int:
        self.fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        return self.fds[-1]

    def _lay_out(self) -> None:
        """The compact disk's head (the source's boot code and gap) and its new table."""
        size = self.plan.target_size
        first = min((p.start for p in self.source.table.partitions), default=0)
        with open(self.source.path, "rb") as src, open(self.disk, "wb") as out:
            out.truncate(size)
            out.write(src.read(min(first, HEAD_COPY, size)))
        write_table(self.disk, self.plan.target_table)

    @property
    def notes(self) -> tuple[str, ...]:
        head = (
            f"saved shrunk: the image holds a {human_size(self.plan.target_size)} disk (the"
            f" source has {human_size(self.plan.source_size)})"
        )
        return (head, *self.shrunk.done)

    def tasks(self, src: DirectFile | int, chunk: int) -> Iterator[ReadTask]:
        """Reads for every region of the compact disk: raw areas from the scratch file, data
        from the source, and what a resizer changed from its overlay."""
        moves = {m.name: m for m in self.plan.moves}
        for region in self.regions:
            move = moves.get(region.name)
            if move is None:  # a raw area of the compact disk
                for piece in extents.split(region.runs, chunk):
                    at = region.disk_offset + piece.start
                    yield ReadTask(region.name, piece.start, self.disk_fd, at, piece.length)
                continue
            overlay = self.overlays.get(region.name)
            yield from steps.read_tasks(
                region.name, region.runs, src, move.source.start, overlay, chunk
            )

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.shrunk.discard()
        if hasattr(self, "work"):
            shutil.rmtree(self.work, ignore_errors=True)
