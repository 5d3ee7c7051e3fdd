"""Restoring a whole-disk image onto a larger disk with growth: the Plan of a clone, made from
what the image's manifest recorded (the partition table, and per partition region the volume's
filesystem, copy method and state), so that restore and clone share one layout rule
(engine/layout/plan.py), one table writer (engine/layout/table_write.py) and the same fixups.

The target path (engine/target/) then writes it like a clone's: tables wiped, partitions' data
at their new starts, the head area (boot code, post-MBR gap) raw with its old table scrubbed,
read-back verify, then the new table (sfdisk, identities kept), hidden sectors of moved NTFS/FAT
volumes, and ext/NTFS grown to fill their partitions.
"""

from __future__ import annotations

from collections.abc import Callable

from clonebay.engine.layout.plan import Grow, NeedsShrinkError, Plan, plan_layout
from clonebay.errors import TargetTooSmallError
from clonebay.imaging.manifest import Manifest, RegionEntry
from clonebay.model import CopyMethod, Volume, VolumeState

Minimums = Callable[[tuple[int, ...]], dict[int, int]]  # partition numbers -> minimum bytes


def region_volume(region: RegionEntry) -> Volume:
    """The volume a save recorded for a region (no extents: the image's index has them)."""
    try:
        state = VolumeState(region.state)
    except ValueError:
        state = VolumeState.UNKNOWN
    return Volume(
        region.fstype,
        region.size,
        (),
        CopyMethod(region.copy),
        state,
        reason=region.reason,
        notes=tuple(region.notes),
    )


def _volumes(manifest: Manifest) -> dict[int, Volume | None]:
    volumes: dict[int, Volume | None] = {}
    for region in manifest.regions:
        number = region.partition or 0
        if region.kind == "partition" and number:
            volumes[number] = region_volume(region)
    return volumes


def growth_plan(manifest: Manifest, target_size: int, grow: Grow) -> Plan | None:
    """The Plan for restoring onto ``target_size`` bytes, or None when the layout stays as is."""
    if grow is Grow.NONE or manifest.table.kind not in ("gpt", "msdos"):
        return None
    table = manifest.table.to_model()
    if target_size <= table.disk_size:
        return None
    plan = plan_layout(table, _volumes(manifest), target_size, grow, "the image")
    return None if plan.same_layout else plan


STREAM_SHRINK = (
    "; a stream is restored as it arrives, and shrinking a filesystem needs random access to"
    " it: turn the stream into a directory image first (clonebay convert STREAM DIR.image), then"
    " restore that onto the smaller disk"
)


def smaller_plan(
    manifest: Manifest, target_size: int, fit: Grow, minimums: Minimums | None
) -> Plan:
    """The Plan onto a target smaller than the image's disk: the partitions placed as they
    are when they fit (the disk only had unused room at its end), else shrunk (``minimums``
    measures how far; None for a stream: refused, saying why)."""
    table = manifest.table.to_model()
    volumes = _volumes(manifest)
    try:
        return plan_layout(table, volumes, target_size, Grow.NONE, "the image")
    except NeedsShrinkError as exc:
        if minimums is None:
            raise TargetTooSmallError(exc.message + STREAM_SHRINK) from None
        found = minimums(exc.candidates)
        return plan_layout(table, volumes, target_size, fit, "the image", minimums=found)
