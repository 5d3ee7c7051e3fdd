"""The restore job: an image directory -> a disk, an image file, or one partition.

Order matters for safety (DESIGN §5): first the areas that hold partition tables are zeroed on
the target (the old MBR/GPT at the start and a stale backup GPT at the end), then the partitions'
data is written, then the raw areas, with the partition table last of all, then fsync. A restore
that is interrupted leaves a disk with no partition table: plainly incomplete, never one that
looks whole. Every frame's xxh3-128 is checked as it is decoded; ``verify`` re-reads the target.

Decoding runs in worker threads (LZ4 releases the GIL) a few chunks ahead of the writer, which
writes in order. Zero records are written as zeros (or punched holes) unless the target is a new
sparse file; bytes no record covers (free space) are not written at all.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from clonebay.engine.layout.plan import Grow, Plan
from clonebay.engine.restore.grow import apply_table_and_fixups, growth_plan
from clonebay.engine.verify import PlacedRecords, VerifyError, verify_records
from clonebay.errors import CancelledError, ClonebayError, SafetyError, TargetTooSmallError
from clonebay.imaging.manifest import Manifest, RegionEntry
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import FLAG_UNREADABLE, ImageError, Record
from clonebay.model import Progress
from clonebay.system.blockdev import TargetDevice, is_block_device
from clonebay.system.run import run
from clonebay.units import human_size

HEAD_WIPE = 1 << 20  # the old MBR/GPT and boot code live in the first MiB
TAIL_WIPE = 1 << 20  # a stale backup GPT lives in the last 33 sectors


@dataclass(frozen=True)
class RestoreOptions:
    region: str | None = None  # restore only this region, at offset 0 of the target
    verify: bool = False
    grow: Grow = Grow.NONE  # on a larger target: how partitions grow (engine/layout/plan.py)
    workers: int = max(1, min(4, os.cpu_count() or 1))
    check: bool = True  # check every frame of a directory image before the first write
    whole_disk: bool = False  # a single volume onto a disk that holds a partition table


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
                f" holds {human_size(target_size)} ({target_size} bytes)"
            )
        return [Placement(entry, 0)]
    need = needed_size(manifest, None)
    if target_size < need:
        raise TargetTooSmallError(
            f"the image's disk is {human_size(need)} ({need} bytes); the target holds"
            f" {human_size(target_size)} ({target_size} bytes). Shrinking onto a smaller disk is"
            " not available yet"
        )
    # Partitions first, then raw areas from the end backwards: the area at offset 0 (the
    # partition table) is the very last thing written.
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
    return max(regions_end, int(manifest.source.get("size", 0) or 0))


def single_partition(manifest: Manifest) -> str | None:
    """The region of an image saved from one partition (restored without --region), else None."""
    if manifest.source.get("partition") and len(manifest.regions) == 1:
        return manifest.regions[0].name
    return None


def wipe_tables(dev: TargetDevice) -> None:
    """Zero where partition tables live (first and last MiB) before any data is written."""
    if not dev.fresh:
        dev.zero(0, min(HEAD_WIPE, dev.size))
        dev.zero(max(0, dev.size - TAIL_WIPE), min(TAIL_WIPE, dev.size))


def finish_target(target: str, dev: TargetDevice, needed: int, manifest: Manifest) -> list[str]:
    """After a whole-disk restore: the GPT backup to the end of a larger target, and the
    kernel told about the new table. Returns what was done, for the job's warnings."""
    done = []
    if dev.size > needed and manifest.table.get("kind") == "gpt":
        _move_backup_gpt(target)
        done.append("GPT backup header moved to the end of the larger target")
    if is_block_device(target):
        _reread_partitions(target)
    return done


def _decoded(
    reader: ImageReader, placements: list[Placement], workers: int, cancel: threading.Event
) -> Iterator[tuple[Placement, Record, Future[bytes] | None]]:
    """(placement, record, future of its bytes) in write order, decoding a few ahead."""
    depth = workers * 2
    with ThreadPoolExecutor(workers, thread_name_prefix="clonebay-decode") as pool:
        window: list[tuple[Placement, Record, Future[bytes] | None]] = []
        for place in placements:
            for rec in reader.records(place.region.name):
                if cancel.is_set():
                    raise CancelledError("restore cancelled: the target is incomplete")
                fut = (
                    None
                    if rec.flags
                    else pool.submit(reader.read_at, place.region.name, rec.offset, rec.length)
                )
                window.append((place, rec, fut))
                if len(window) > depth:
                    yield window.pop(0)
        yield from window


def restore(
    image: str,
    target: str,
    options: RestoreOptions = RestoreOptions(),
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Restore ``image`` onto ``target``; returns warnings (e.g. unreadable ranges in the image)."""
    cancel = cancel or threading.Event()
    if is_block_device(target):
        refuse_mounted(target)
    with ImageReader(image) as reader:
        manifest = reader.manifest
        region = options.region or single_partition(manifest)
        needed = needed_size(manifest, region)
        with TargetDevice(target, size=needed) as dev:
            placements = plan_restore(manifest, dev.size, region)
            grown = growth_plan(manifest, dev.size, options.grow) if region is None else None
            if grown is not None:
                placements = grown_placements(placements, grown)
            try:
                warnings = _write(
                    reader,
                    dev,
                    placements=placements,
                    whole_disk=region is None,
                    progress=progress,
                    options=options,
                    cancel=cancel,
                )
            except ClonebayError as exc:
                exc.message += incomplete_note(target, region)
                raise
            dev.sync()
            if options.verify:  # before fixups, which change what the image recorded
                placed = [
                    PlacedRecords(p.region.name, p.target_offset, reader.records(p.region.name))
                    for p in placements
                ]
                problems = verify_records(target, placed, progress=progress, cancel=cancel)
                _check_problems(target, problems)
            warnings += finish_restore(target, dev, manifest, grown, region)
    return warnings


def finish_restore(
    target: str, dev: TargetDevice, manifest: Manifest, grown: Plan | None, region: str | None
) -> list[str]:
    """After the data is written and verified: the grown layout's table and fixups, or the
    image's own layout finished (backup GPT at the end), then the kernel re-reads the table."""
    if grown is not None:
        done = apply_table_and_fixups(target, dev, grown)
        if is_block_device(target):
            _reread_partitions(target)
        return done
    if region is None:
        return finish_target(target, dev, needed_size(manifest, None), manifest)
    if is_block_device(target):
        _reread_partitions(target)
    return []


def incomplete_note(target: str, region: str | None) -> str:
    cleared = " (its old partition table was cleared)" if region is None else ""
    return f"\nthe restore stopped: {target} is incomplete{cleared}"


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


def _check_problems(target: str, problems: list[str]) -> None:
    if problems:
        raise VerifyError(
            f"verification of {target} failed: {len(problems)} chunk(s) differ from the"
            f" image; first: {problems[0]}"
        )


def _write(
    reader: ImageReader,
    dev: TargetDevice,
    *,
    placements: list[Placement],
    whole_disk: bool,
    progress: Callable[[Progress], None] | None,
    options: RestoreOptions,
    cancel: threading.Event,
) -> list[str]:
    warnings: list[str] = []
    if whole_disk:
        wipe_tables(dev)
    total = sum(r.length for p in placements for r in reader.records(p.region.name))
    done = 0
    started = last = time.monotonic()
    for place, rec, fut in _decoded(reader, placements, options.workers, cancel):
        at = place.target_offset + rec.offset
        if fut is None:
            dev.zero(at, rec.length)
            if rec.flags & FLAG_UNREADABLE:
                warnings.append(
                    f"region {place.region.name}: {rec.length} bytes at offset {rec.offset} were"
                    " unreadable on the source and are zeros on the target"
                )
        else:
            dev.write_at(fut.result(), at)
        done += rec.length
        now = time.monotonic()
        if progress and (now - last > 0.5 or done == total):
            last = now
            rate = done / max(now - started, 1e-6)
            progress(
                Progress(
                    place.region.name,
                    done,
                    total,
                    rate,
                    (total - done) / rate if rate else None,
                    "write",
                )
            )
    return warnings


def _move_backup_gpt(target: str) -> None:
    """Put the backup GPT at the new end of a larger target (sgdisk -e), then check it."""
    run(["sgdisk", "-e", target])


def _reread_partitions(target: str) -> None:
    """Ask the kernel to re-read the new partition table (not fatal if it is busy)."""
    run(["blockdev", "--rereadpt", target], check=False)


def refuse_mounted(target: str) -> None:
    """SafetyError when the target block device or one of its partitions is mounted."""
    from clonebay.system.udev import find_disk

    disk = find_disk(target)
    if disk is not None and (disk.mountpoints or disk.is_live_medium):
        where = ", ".join(disk.mountpoints) or "the live system"
        raise SafetyError(f"{target} is in use ({where}): unmount it first; nothing was written")
