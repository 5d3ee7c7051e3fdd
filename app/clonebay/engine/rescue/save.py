"""A rescued save (``save --rescue``): its map beside the image, and the later passes.

Pass 1 runs in the save's pipeline (engine/save.py), a chunk it could not read becoming an
UNREADABLE record. Passes 2-5 (reader.py) then read what it left; their bytes are kept in a
sparse file beside the image (recovered.py) and added to the image as one more revision
(image.py), with the files and metadata the ranges still unreadable hit (files.py). A save
resumed after its pass 1 was complete runs the later passes again over the image's unreadable
ranges (``resume_passes``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.regions import SourceRegion, source_regions
from clonebay.engine.rescue.files import hit_lines
from clonebay.engine.rescue.image import add_recovered
from clonebay.engine.rescue.mapfile import FINISHED
from clonebay.engine.rescue.reader import RescueOptions, Rescuer, split_at
from clonebay.engine.rescue.recovered import Recovered
from clonebay.engine.resume.identity import check_disk
from clonebay.errors import ClonebayError, UsageError
from clonebay.fs import extents
from clonebay.imaging.manifest import Manifest
from clonebay.model import Extent
from clonebay.system.blockdev import SourceDevice

if TYPE_CHECKING:
    from clonebay.engine.save import SaveOptions


def save_rescuer(
    src: SourceDevice, image: str | IO[bytes], options: SaveOptions, cancel: threading.Event
) -> Rescuer | None:
    """The rescue of ``save --rescue`` (None without it): its map beside the image."""
    if options.rescue is None or not isinstance(image, str):  # (a stream: refused earlier)
        return None
    path = rescue_map_path(image, options.rescue)
    command = f"clonebay save --rescue {src.path} {image}"
    return Rescuer.open(src, path, cancel, command, resume=options.resume)


def rescue_map_path(image: str, rescue: RescueOptions) -> Path:
    """Where ``save --rescue`` keeps its map: --mapfile, else IMAGE.map beside the image."""
    return Path(rescue.map_path or image.rstrip("/") + ".map")


def passes_into_image(
    rescuer: Rescuer, image: str, regions: list[SourceRegion], retries: int
) -> Manifest | None:
    """Passes 2-5 over what pass 1 left; what they read becomes the image's next revision."""
    domain = rescue_domain(regions)
    recovered = Recovered(Path(image.rstrip("/") + ".rescued.tmp"))
    try:
        try:
            rescuer.later_passes(domain, recovered.put, retries)
        except ClonebayError as exc:
            if recovered.ranges():  # keep what was read before the stop
                add_recovered(image, regions, recovered, "rescue: stopped early")
            exc.message += (
                f"\nthe image {image} is complete as far as the source was read; the parts not"
                f" read are unreadable ranges in it, and {rescuer.map.path} maps them"
            )
            raise
        summary = rescuer.summary(domain)
        note = f"rescue: {' / '.join(summary.passes)}: {summary.bad_bytes} bytes left unreadable"
        areas = [(r.name, r.disk_offset, r.size) for r in regions]
        bad = [piece for e in summary.bad for piece in split_at(areas, e.start, e.length)]
        parts = [(r.name, r.volume.fstype if r.volume else "", r.disk_offset) for r in regions]
        hits = hit_lines(rescuer.io.path, parts, bad)
        return add_recovered(image, regions, recovered, note, hits)
    finally:
        recovered.close()


def resume_passes(
    source: str, image: str, options: SaveOptions, cancel: threading.Event
) -> Manifest:
    """``save --rescue --resume`` of an image pass 1 completed: the later passes again, over
    the image's unreadable ranges (what an interrupted run read there was never added)."""
    from clonebay.imaging.reader import ImageReader

    assert options.rescue is not None
    with ImageReader(image) as reader:
        manifest = reader.manifest
    regions = source_regions(inspect_disk(source, options.keys), manifest.source.partition)
    if [(r.name, r.disk_offset, r.size) for r in regions] != [
        (e.name, e.disk_offset, e.size) for e in manifest.regions
    ]:
        raise UsageError(f"the regions of {source} are not those of the image {image}")
    where = {r.name: r.disk_offset for r in regions}
    lost = [Extent(where[u.region] + u.offset, u.length) for u in manifest.unreadable]
    with SourceDevice(source) as src:
        info = manifest.source
        recorded = {"path": info.path, "size": info.size, "serial": info.serial,
                    "model": info.model}  # fmt: skip
        check_disk(recorded, src.path, src.size, "source")
        rescuer = save_rescuer(src, image, options, cancel)
        assert rescuer is not None
        try:
            finished = rescuer.map.current_status == FINISHED
            if finished and not any(rescuer.map.ranges(FINISHED, (e.start, e.end)) for e in lost):
                raise UsageError(
                    f"the rescue of {image} is complete: nothing to resume ({rescuer.map.path})"
                )
            rescuer.forget(lost)
            return passes_into_image(rescuer, image, regions, options.rescue.retries) or manifest
        finally:
            rescuer.close()


def rescue_domain(regions: list[SourceRegion]) -> tuple[Extent, ...]:
    """The source positions a save reads: every region's runs, where they are on the disk."""
    return extents.normalize(
        Extent(region.disk_offset + run.start, run.length)
        for region in regions
        for run in region.runs
    )
