"""What the copy changed that the post-copy pass must know: which partitions moved, which
volumes were clean on the source (a dirty flag on the target is then the copy's own doing:
ntfsresize marks a grown NTFS for a check at its next boot), the table's kind, and whether the
target is a fixed disk of the machine the live system runs on (the NVRAM entry's default)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.jobs import image_manifest
from clonebay.engine.layout.plan import Plan
from clonebay.engine.postcopy.apply import CopyFacts
from clonebay.imaging.manifest import Manifest
from clonebay.model import VolumeState
from clonebay.system.parttable import read_table
from clonebay.system.udev import LIVE_MEDIUM_MOUNTS, find_disk


@dataclass(frozen=True)
class SourceFacts:
    """The source's partitions as the copy read them."""

    starts: dict[int, int] = field(default_factory=dict)  # number -> start byte
    clean: frozenset[int] = frozenset()  # numbers whose volume was clean


def from_plan(plan: Plan) -> SourceFacts:
    """A clone's source, from its Plan."""
    starts = {m.number: m.source.start for m in plan.moves}
    clean = frozenset(
        m.number for m in plan.moves if m.volume and m.volume.state is VolumeState.CLEAN
    )
    return SourceFacts(starts, clean)


def from_disk(source: str) -> SourceFacts:
    """A clone's source disk, probed again (read-only)."""
    report = inspect_disk(source)
    starts = {pr.partition.number: pr.partition.start for pr in report.partitions}
    clean = frozenset(
        pr.partition.number
        for pr in report.partitions
        if pr.volume is not None and pr.volume.state is VolumeState.CLEAN
    )
    return SourceFacts(starts, clean)


def from_image(image: str) -> SourceFacts:
    """A restore's source, from the image's manifest (directory or stream file)."""
    return from_manifest(image_manifest(image))


def from_manifest(manifest: Manifest) -> SourceFacts:
    """The source an image (or a multicast session) recorded."""
    starts = {p.number: p.start for p in manifest.table.partitions}
    clean = frozenset(
        r.partition for r in manifest.regions if r.partition and r.state == VolumeState.CLEAN.value
    )
    return SourceFacts(starts, clean)


def copy_facts(source: SourceFacts | None, target: str) -> CopyFacts:
    """What the copy changed on ``target`` (``source`` None: not known, as for ``fixup``)."""
    after = read_table(target)
    moved = {}
    if source is not None:
        old = source.starts
        moved = {
            p.number: (old[p.number], p.start)
            for p in after.partitions
            if p.number in old and old[p.number] != p.start
        }
    disk = find_disk(target)
    fixed = bool(disk and not disk.removable and disk.transport not in {"usb", "loop", "file", ""})
    own = fixed and any(os.path.isdir(m) for m in LIVE_MEDIUM_MOUNTS)  # in the live system
    clean = source.clean if source is not None else frozenset()
    return CopyFacts(moved, after.kind, own, clean)
