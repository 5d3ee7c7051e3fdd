"""Restoring a whole-disk image onto a larger disk with growth: the Plan of a clone, made from
what the image's manifest recorded (the partition table, and per partition region the volume's
filesystem, copy method and state), so that restore and clone share one layout rule
(engine/layout/plan.py), one table writer (engine/layout/table_write.py) and the same fixups.

Order on the target: tables wiped, partitions' data at their new starts, the head area (boot
code, post-MBR gap) raw, read-back verify, then the new table (sfdisk, identities kept), hidden
sectors of moved NTFS/FAT volumes, and ext/NTFS grown to fill their partitions.
"""

from __future__ import annotations

from typing import Any

from clonebay.engine.layout import fixups
from clonebay.engine.layout.plan import Grow, Plan, plan_layout
from clonebay.engine.layout.table_write import write_table
from clonebay.imaging.manifest import Manifest, RegionEntry
from clonebay.model import CopyMethod, Partition, PartitionTable, Volume, VolumeState
from clonebay.system.blockdev import TargetDevice


def table_from_manifest(data: dict[str, Any]) -> PartitionTable:
    """The PartitionTable a save recorded (engine/regions.table_as_data) as a model object."""
    parts = tuple(
        Partition(**{**p, "flags": tuple(p.get("flags", ()))}) for p in data.get("partitions", [])
    )
    fields = {k: v for k, v in data.items() if k != "partitions"}
    return PartitionTable(**fields, partitions=parts)


def _volume(region: RegionEntry) -> Volume:
    try:
        state = VolumeState(region.state)
    except ValueError:
        state = VolumeState.UNKNOWN
    return Volume(region.fstype, region.size, (), CopyMethod(region.copy), state)


def growth_plan(manifest: Manifest, target_size: int, grow: Grow) -> Plan | None:
    """The Plan for restoring onto ``target_size`` bytes, or None when the layout stays as is."""
    table_data = dict(manifest.table)
    if grow is Grow.NONE or table_data.get("kind") not in ("gpt", "msdos"):
        return None
    table = table_from_manifest(table_data)
    if target_size <= table.disk_size:
        return None
    volumes: dict[int, Volume | None] = {}
    for region in manifest.regions:
        number = int(dict(region.extra).get("partition", 0) or 0)
        if region.kind == "partition" and number:
            volumes[number] = _volume(region)
    plan = plan_layout(table, volumes, target_size, grow, "the image")
    return None if plan.same_layout else plan


def apply_table_and_fixups(target: str, dev: TargetDevice, plan: Plan) -> list[str]:
    """After the data is written and verified: the new table, then the fixups."""
    write_table(target, plan.target_table)
    done = ["partition table written for the larger disk"]
    sector = plan.source_table.sector_size
    for move in plan.moves:
        fs = move.volume.fstype if move.volume else ""
        if move.moved and fs in ("ntfs", "fat12", "fat16", "fat32"):
            fixups.patch_hidden_sectors(dev, move, sector)
            done.append(f"p{move.number}: hidden sectors set to {move.target_start // sector}")
    dev.sync()
    for move in plan.moves:
        if move.grow_fs:
            done.append(fixups.grow_filesystem(target, move))
    return done
