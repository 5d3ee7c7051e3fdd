"""``save --resume``: go on with a save that stopped, from its last checkpoint.

A save into an image directory checkpoints every few seconds (imaging/checkpoint.py): the
packs and the records up to there are durable, with the job's record beside them (which source,
the fingerprint of its used blocks, the rescue map). Resuming checks that the source is the
same disk with the same used blocks, cuts the image back to the checkpoint, and reads only what
comes after it; the image it ends with is the one the uninterrupted save would have written.

A rescue (``save --rescue``) resumes the same way, with its map: what the map says was read
after the checkpoint is non-tried again (the image lost it), and chunks an earlier run found bad
are not read again in pass 1 (they wait for the later passes). A rescue stopped in its later
passes has a complete image already: those passes run again over the image's unreadable ranges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from clonebay.engine.pipeline import ReadTask
from clonebay.engine.regions import SourceRegion
from clonebay.engine.rescue.reader import RescueOptions
from clonebay.engine.resume.checkpoints import reads_after
from clonebay.engine.resume.identity import check_disk, check_fingerprint
from clonebay.errors import UsageError
from clonebay.fs import extents
from clonebay.imaging import checkpoint, spec
from clonebay.imaging.checkpoint import Checkpoint
from clonebay.model import Extent
from clonebay.system.blockdev import SourceDevice

if TYPE_CHECKING:
    from clonebay.engine.save import SaveOptions


def resume_point(
    image: str | IO[bytes], options: SaveOptions
) -> tuple[Checkpoint | None, SaveOptions]:
    """The checkpoint to resume from and the options it was saved with (None: the image is
    complete, and only a rescue's later passes remain)."""
    if not isinstance(image, str):
        raise UsageError("--resume goes on with a save into an image folder, not a stream")
    if options.shrink:
        raise UsageError("save --resume cannot shrink: resume the save as it was begun")
    path = Path(image)
    if (path / spec.MANIFEST_NAME).exists():
        if options.rescue is None and Path(image.rstrip("/") + ".map").is_file():
            options = dataclasses.replace(options, rescue=RescueOptions())
        if options.rescue is None:
            raise UsageError(
                f"{image} is a complete image: there is nothing to resume (a rescue's later"
                " passes resume with --rescue --resume)"
            )
        return None, options
    point = checkpoint.load(path)
    job = point.job
    rescue = options.rescue
    if job.get("rescue_map") and rescue is None:
        rescue = RescueOptions(map_path=str(job["rescue_map"]))
    elif rescue is not None and not job.get("rescue_map"):
        raise UsageError(f"{image} was not begun with --rescue: resume it without --rescue")
    elif rescue is not None and not rescue.map_path:
        rescue = dataclasses.replace(rescue, map_path=str(job["rescue_map"]))
    partition = job.get("partition")
    return point, dataclasses.replace(
        options,
        partition=partition if isinstance(partition, int) else None,
        chunk_size=point.chunk_size,
        pack_limit=point.pack_limit,
        codec=point.codec,
        rescue=rescue,
    )


def check_resumable(
    point: Checkpoint,
    job: dict[str, Any] | None,
    src: SourceDevice,
    regions: list[SourceRegion] | None,
) -> None:
    """UsageError unless ``src`` is the disk the checkpoint's save read (and, given the
    ``job`` record and ``regions`` of this run, with the same used blocks); the checkpoint's
    own record is then what the next checkpoints keep."""
    recorded = point.job
    source = recorded.get("source")
    if not isinstance(source, dict):
        raise UsageError("the checkpoint has no record of its source: save again")
    check_disk(source, src.path, src.size, "source")
    if job is None or regions is None:
        return
    check_fingerprint(
        str(recorded.get("fingerprint", "")),
        str(job["fingerprint"]),
        src.path,
        (recorded.get("opened"), list(job.get("opened", []))),
    )
    names = {r.name for r in regions}
    for entry in [*point.regions, *([point.open.entry] if point.open else [])]:
        if entry.name not in names:  # (the fingerprint covers this; a hand-edited checkpoint)
            raise UsageError(f"the checkpoint names a region {entry.name} the source lacks")
    job.update(recorded)


def remaining_tasks(tasks: Iterable[ReadTask], point: Checkpoint) -> Iterator[ReadTask]:
    """The reads after the checkpoint: regions it closed are skipped, the one it left open
    goes on from its next offset."""
    done = {entry.name for entry in point.regions}
    if point.open is None:
        return reads_after(tasks, done, "", 0)
    return reads_after(tasks, done, point.open.entry.name, point.open.next_offset)


def remaining_totals(regions: list[SourceRegion], point: Checkpoint | None) -> dict[str, int]:
    """The bytes each region still sends through the pipeline (its count check)."""
    if point is None:
        return {r.name: r.used_bytes for r in regions}
    done = {entry.name for entry in point.regions}
    totals = {r.name: r.used_bytes for r in regions if r.name not in done}
    if point.open is not None:
        totals[point.open.entry.name] -= point.open.stats.copied_bytes
    return totals


def remaining_domain(regions: list[SourceRegion], point: Checkpoint) -> tuple[Extent, ...]:
    """Source positions still to read after the checkpoint."""
    done = {entry.name for entry in point.regions}
    open_name, next_offset = (
        (point.open.entry.name, point.open.next_offset) if point.open else ("", 0)
    )
    out = []
    for region in regions:
        if region.name in done:
            continue
        start = next_offset if region.name == open_name else 0
        for run in extents.intersect(region.runs, (Extent(start, region.size - start),)):
            out.append(Extent(region.disk_offset + run.start, run.length))
    return extents.normalize(out)


def saved_domain(regions: list[SourceRegion], point: Checkpoint) -> tuple[Extent, ...]:
    """Source positions the checkpoint holds as read (data or zeros, not unreadable)."""
    where = {r.name: r.disk_offset for r in regions}
    read = extents.subtract(
        extents.normalize(
            Extent(r.disk_offset + e.start, e.length) for r in regions for e in r.runs
        ),
        remaining_domain(regions, point),
    )
    lost = [*point.unreadable, *(point.open.unreadable if point.open else [])]
    return extents.subtract(read, [Extent(where[u.region] + u.offset, u.length) for u in lost])
