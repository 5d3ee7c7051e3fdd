"""Where an image's regions go on a target, and the TargetJob that says so: shared by the three
readers that restore (an image directory, a stream, a multicast or TCP session).

A whole-disk image puts every region at its recorded disk offset; the raw areas (partition
tables, EBRs, boot code, the post-MBR gap, the backup GPT) are written by the target path last,
from the end backwards. A grown restore (``--grow`` onto a larger disk) puts partitions at the
places of the grown layout (restore/grow.py) and keeps only the head of the raw areas (boot
code, post-MBR gap): the new table is written by sfdisk. A single-region restore puts the region
at offset 0 of a partition (or, with ``--whole-disk``, of a whole disk).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from clonebay.engine.layout.plan import Grow, Plan
from clonebay.engine.layout.states import EDITABLE, state_note
from clonebay.engine.restore.grow import Minimums, growth_plan, region_volume, smaller_plan
from clonebay.engine.target import RegionPlan, TargetJob, checks
from clonebay.errors import TargetTooSmallError
from clonebay.imaging.manifest import Manifest, RegionEntry
from clonebay.imaging.spec import ImageError
from clonebay.model import VolumeState
from clonebay.units import human_size


@dataclass(frozen=True)
class RestoreOptions:
    region: str | None = None  # restore only this region, at offset 0 of the target
    verify: bool = False
    grow: Grow = Grow.NONE  # on a larger target: how partitions grow (layout/plan.py)
    workers: int = max(1, min(4, os.cpu_count() or 1))
    check: bool = True  # check every frame of a directory image before the first write
    whole_disk: bool = False  # a single volume onto a disk that holds a partition table
    fit: Grow = Grow.PROPORTIONAL  # onto a smaller disk: how room beyond the minimums is shared
    scratch: str = ""  # where shrink overlays live (engine/shrink/)


@dataclass(frozen=True)
class Placement:
    """Where a region of the image goes on the target."""

    region: RegionEntry
    target_offset: int


def plan_restore(manifest: Manifest, target_size: int, region: str | None) -> list[Placement]:
    """Placements for a restore, or TargetTooSmallError before anything is written."""
    if region is not None:
        entry = region_of(manifest, region)
        if target_size < entry.size:
            raise TargetTooSmallError(
                f"region {region} needs {human_size(entry.size)} ({entry.size} bytes); the target"
                f" holds {human_size(target_size)} ({target_size} bytes); nothing was written"
            )
        return [Placement(entry, 0)]
    need = needed_size(manifest, None)
    if target_size < need:
        raise TargetTooSmallError(
            f"the image's disk is {human_size(need)} ({need} bytes); the target holds"
            f" {human_size(target_size)} ({target_size} bytes); nothing was written"
        )
    return every_placement(manifest)


def every_placement(manifest: Manifest) -> list[Placement]:
    """Every region at its recorded disk offset, in the order they are written."""
    # Partitions first, then raw areas from the end backwards (the target path holds the
    # areas that carry tables and writes them last in this order too).
    parts = [r for r in manifest.regions if r.kind != "raw-area"]
    areas = sorted(
        (r for r in manifest.regions if r.kind == "raw-area"), key=lambda r: -r.disk_offset
    )
    return [Placement(r, r.disk_offset) for r in parts + areas]


def region_of(manifest: Manifest, name: str) -> RegionEntry:
    """The region ``name`` of the image, or an ImageError listing the regions it has."""
    try:
        return manifest.region(name)
    except KeyError:
        known = ", ".join(r.name for r in manifest.regions) or "none"
        raise ImageError(f"the image has no region {name!r} (regions: {known})") from None


def needed_size(manifest: Manifest, region: str | None) -> int:
    """Bytes the target must hold: the region's size, or the source disk's."""
    if region is not None:
        return region_of(manifest, region).size
    regions_end = max((r.disk_offset + r.size for r in manifest.regions), default=0)
    return max(regions_end, manifest.source.size)


def single_partition(manifest: Manifest) -> str | None:
    """The region of an image saved from one partition (restored without --region), else None."""
    if manifest.source.partition and len(manifest.regions) == 1:
        return manifest.regions[0].name
    return None


def grown_placements(placements: list[Placement], plan: Plan) -> list[Placement]:
    """Partitions at their planned starts; of the raw areas only the head (boot code, post-MBR
    gap): the partition table and EBRs are written anew by sfdisk for the new layout."""
    starts = {f"p{m.number}": m.target_start for m in plan.moves}
    out = []
    for p in placements:
        if p.region.kind == "raw-area":
            if p.region.disk_offset == 0:
                out.append(p)
        else:
            out.append(Placement(p.region, starts.get(p.region.name, p.target_offset)))
    return out


def placements_for(
    manifest: Manifest,
    target_size: int,
    region: str | None,
    options: RestoreOptions,
    minimums: Minimums | None = None,
) -> tuple[list[Placement], Plan | None]:
    """The placements on a target of ``target_size`` bytes, and the grown (or shrunk) layout
    if any. ``minimums`` measures how far partitions can shrink (None: a stream, which
    cannot be shrunk)."""
    smaller = target_size < needed_size(manifest, region)
    if region is None and smaller and manifest.table.kind in ("gpt", "msdos"):
        plan = smaller_plan(manifest, target_size, options.fit, minimums)
        return grown_placements(every_placement(manifest), plan), plan
    grow = options.grow
    placements = plan_restore(manifest, target_size, region)
    grown = growth_plan(manifest, target_size, grow) if region is None else None
    if grown is not None:
        placements = grown_placements(placements, grown)
    return placements, grown


def _state(entry: RegionEntry) -> VolumeState:
    try:
        return VolumeState(entry.state)
    except ValueError:
        return VolumeState.UNKNOWN


def restore_job(
    what: str,
    manifest: Manifest,
    target: str,
    *,
    placements: list[Placement],
    grown: Plan | None,
    options: RestoreOptions,
    planned: Mapping[str, int],
    region: str | None,
) -> TargetJob:
    """The restore as the target path sees it; ``planned``: bytes each region's records cover."""
    whole = region is None
    sizes = {f"p{m.number}": m.target_size for m in grown.moves} if grown else {}
    regions = tuple(
        RegionPlan(
            p.region.name,
            p.target_offset,
            sizes.get(p.region.name, p.region.size),
            planned[p.region.name],
            held=whole and p.region.kind == "raw-area",
            fstype=p.region.fstype,
            state=_state(p.region),
            editable=_state(p.region) in EDITABLE and p.region.copy == "native",
        )
        for p in placements
    )
    table = manifest.table
    notes = tuple(
        note
        for p in placements
        if p.region.kind != "raw-area"
        and (note := state_note(p.region.name, region_volume(p.region)))
    )
    needed = needed_size(manifest, region)
    if grown is not None:  # onto a smaller disk: the layout's size
        needed = min(needed, grown.target_size)
    return TargetJob(
        what,
        target,
        needed,
        regions,
        sector_size=table.sector_size if table.recorded else manifest.source.logical_sector_size,
        whole_disk=whole,
        allow_table_overwrite=options.whole_disk,
        layout=grown,
        new_table=grown is not None,
        table_kind=table.kind,
        first_usable=table.first_usable,
        verify=options.verify,
        notes=notes,
    )


def unreadable_note(region: str, offset: int, length: int) -> str:
    return (
        f"region {region}: {length} bytes at offset {offset} were unreadable on the source and"
        " are zeros on the target"
    )


@dataclass(frozen=True)
class RestorePlan:
    """A restore decided before anything is written: the region restored alone (or None for
    the whole disk), the target's size, where each region goes, a grown layout, and the job the
    target path runs."""

    region: str | None
    target_size: int
    placements: list[Placement]
    grown: Plan | None
    job: TargetJob


def plan_target(
    what: str,
    manifest: Manifest,
    target: str,
    options: RestoreOptions,
    covered: Callable[[RegionEntry], int] | None = None,
    *,
    minimums: Minimums | None = None,
) -> RestorePlan:
    """Plan a restore of ``manifest``'s image onto ``target``; ``covered`` gives the bytes a
    region's records cover (the count check's plan; default: what the save recorded as used);
    ``minimums`` lets a directory image shrink onto a smaller disk."""
    region = options.region or single_partition(manifest)
    size = checks.target_size(target, needed_size(manifest, region))
    placements, grown = placements_for(manifest, size, region, options, minimums)
    planned = {
        p.region.name: covered(p.region) if covered else p.region.used_bytes for p in placements
    }
    job = restore_job(
        what,
        manifest,
        target,
        placements=placements,
        grown=grown,
        options=options,
        planned=planned,
        region=region,
    )
    return RestorePlan(region, size, placements, grown, job)


def with_layout(
    rp: RestorePlan,
    what: str,
    manifest: Manifest,
    target: str,
    options: RestoreOptions,
    *,
    layout: Plan,
    planned: Mapping[str, int],
) -> RestorePlan:
    """``rp`` with another layout of the same places (the Plan after its shrunk volumes were
    resized) and other planned byte counts for some regions."""
    counts = {r.name: r.planned_bytes for r in rp.job.regions}
    counts.update(planned)
    job = restore_job(
        what,
        manifest,
        target,
        placements=rp.placements,
        grown=layout,
        options=options,
        planned=counts,
        region=rp.region,
    )
    return RestorePlan(rp.region, rp.target_size, rp.placements, layout, job)
