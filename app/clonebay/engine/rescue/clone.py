"""A rescued clone: the later passes write what they read straight to every target.

Pass 1 runs in the clone's pipeline; a chunk it could not read is not written then (_Sink in
clone_job.py). After it, passes 2-5 hand each piece they read to every live target at its
planned place, and what stays unreadable is written as zeros, so every used byte of the
source is written exactly once and the target path's count check and read-back verify hold as
for any clone. The map is kept where ``--mapfile`` says, else in MAP_FOLDER under the source's
name and serial.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import xxhash

from clonebay.engine.layout.plan import Move, Plan
from clonebay.engine.rescue.files import PREFIX, hit_lines
from clonebay.engine.rescue.reader import Rescuer, split_at
from clonebay.engine.target import TargetPath
from clonebay.engine.target.fanout import FanOut, TargetOutcome
from clonebay.fs import extents
from clonebay.model import Extent
from clonebay.units import human_size

MAP_FOLDER = "/var/lib/clonebay/rescue"  # a clone's map when --mapfile is not given


def default_map(source: str) -> Path:
    """``MAP_FOLDER/NAME[-SERIAL].map`` for ``source`` (the folder is made)."""
    from clonebay.system.udev import find_disk

    disk = find_disk(source)
    name = os.path.basename(source.rstrip("/")) + (
        f"-{disk.serial}" if disk and disk.serial else ""
    )
    folder = Path(os.environ.get("CLONEBAY_RESCUE_MAPS", MAP_FOLDER))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".map")


def domain(plan: Plan) -> tuple[Extent, ...]:
    """Source positions of the used blocks the clone reads (areas outside partitions apart)."""
    return extents.normalize(
        Extent(move.source.start + e.start, e.length)
        for move in plan.moves
        if move.volume is not None
        for e in extents.clip(move.volume.used, move.source.size)
    )


def _pieces(plan: Plan, pos: int, length: int) -> Iterable[tuple[Move, int, int]]:
    """(move, offset in its partition, length) of source range ``[pos, pos + length)``."""
    return split_at(((m, m.source.start, m.source.size) for m in plan.moves), pos, length)


def rescue_rest(rescuer: Rescuer, plans: dict[str, Plan], fan: FanOut, retries: int) -> None:
    """Passes 2-5, each piece read written to every target; then zeros where still bad."""
    first = next(iter(plans.values()))
    area = domain(first)

    def deliver(pos: int, data: bytes) -> None:
        def put(path: TargetPath) -> None:
            plan = plans[path.job.target]
            for move, offset, length in _pieces(plan, pos, len(data)):
                piece = data[move.source.start + offset - pos :][:length]
                at = move.target_start + offset
                path.put(move.name, at, piece, xxhash.xxh3_128_digest(piece))

        fan.each(put)

    rescuer.later_passes(area, deliver, retries)
    bad = rescuer.summary(area).bad

    def zeros(path: TargetPath) -> None:
        plan = plans[path.job.target]
        for block in bad:
            for move, offset, length in _pieces(plan, block.start, block.length):
                for run in extents.split((Extent(offset, length),), 4 << 20):
                    path.put_zero(move.name, move.target_start + run.start, run.length)

    fan.each(zeros)


def rescued(rescuer: Rescuer, plans: dict[str, Plan], outcomes: list[TargetOutcome]) -> None:
    """Every outcome learns what stayed unreadable (the source's ranges), what that hit
    (files, metadata), and where the map is."""
    plan = next(iter(plans.values()))
    summary = rescuer.summary(domain(plan))
    bad = summary.bad + tuple(rescuer.area_bad)
    found = [
        (move.name, offset, length)
        for block in bad
        for move, offset, length in _pieces(plan, block.start, block.length)
    ]
    parts = [(m.name, m.volume.fstype if m.volume else "", m.source.start) for m in plan.moves]
    hits = hit_lines(rescuer.io.path, parts, found) if found else []
    hits += [
        f"{PREFIX}the area outside the partitions at byte {b.start}: {b.length} bytes (boot"
        " code, a partition table or a gap)"
        for b in rescuer.area_bad
    ]
    for outcome in outcomes:
        outcome.rescue_map = str(rescuer.map.path)
        outcome.unreadable = bad
        if bad:
            outcome.warnings.append(
                f"{human_size(sum(b.length for b in bad))} of the source could not be read"
                f" in {len(bad)} range(s): zeros on the target (map: {rescuer.map.path})"
            )
            outcome.warnings.extend(hits)
