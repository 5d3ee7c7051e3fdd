"""A shrink from the job's side: measure, check the scratch room, shrink, and read the result.

1. ``minimums``: each candidate partition's minimum size, measured in a view (resize.py), for
   the Plan (engine/layout/shrink.py).
2. ``check_room``: the overlays must fit where they live. A view's overlay holds what the
   resizer rewrote: at most the used data beyond the new end (which it moves) and the metadata
   it touches. The Plan's estimate is that data plus 64 MiB per volume; a scratch folder with
   less free space is refused before anything is done.
3. ``shrink_all``: every shrunk partition resized in its view, before the target is opened: a
   resizer that fails leaves the target as it was. The Plan comes back with each shrunk move's
   volume replaced by what the resized view holds (its used blocks).
4. ``read_tasks``: the pipeline's reads for a shrunk partition: the ranges the resizer changed
   from the overlay file, the rest straight from the source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from clonebay.engine.layout.plan import Move, Plan
from clonebay.engine.layout.shrink import overlay_bound
from clonebay.engine.pipeline import ReadTask
from clonebay.engine.shrink import resize
from clonebay.engine.shrink.view import Base, Changes, scratch_root
from clonebay.engine.stores.space import free_bytes
from clonebay.errors import SafetyError, UsageError
from clonebay.fs import extents
from clonebay.model import Extent, Volume
from clonebay.system.blockdev import ByteSource
from clonebay.system.directio import DirectFile
from clonebay.units import human_size

BaseOf = Callable[[Move], Base]


def scratch_dir(scratch: str) -> Path:
    """The folder for the overlays (made when missing); UsageError when it cannot be one."""
    where = Path(scratch) if scratch else scratch_root()
    try:
        where.mkdir(parents=True, exist_ok=True)
        if not os.access(where, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        raise UsageError(
            f"{where} cannot hold the shrink's copy-on-write overlays ({exc.strerror or exc}):"
            " pass --scratch DIR with a writable folder; nothing was written"
        ) from exc
    return where


_MEASURED: dict[tuple[Base, str, tuple[int, ...]], int] = {}


def _signature(base: Base) -> tuple[int, ...]:
    """What changes when the bytes under ``base`` may have changed (the device or file's
    identity and modification time, the image manifest's)."""
    path = Path(base.image) / "manifest.json" if base.image else Path(base.disk)
    info = path.stat()
    return (info.st_dev, info.st_ino, info.st_rdev, info.st_size, info.st_mtime_ns)


def minimums(candidates: Mapping[int, tuple[Base, Volume | None]], scratch: str) -> dict[int, int]:
    """The minimum size (bytes) of each candidate's filesystem, by partition number. Each is
    measured once per process for the same unchanged bytes: the Plan shown and the job that
    follows it ask the same question (on a large NTFS, ntfsresize --info reads its whole
    bitmap). A stale answer cannot do harm: the resizer itself refuses a size too small."""
    where = scratch_dir(scratch)
    out = {}
    for number, (base, volume) in candidates.items():
        if volume is None:
            continue
        key = (base, volume.fstype, _signature(base))
        if key not in _MEASURED:
            _MEASURED[key] = resize.measure(base, volume, where, f"p{number}")
        out[number] = _MEASURED[key]
    return out


def overlay_estimate(move: Move) -> int:
    """The most a move's overlay is expected to hold (layout/shrink.py's overlay_bound)."""
    return overlay_bound(move.volume, move.target_size) if move.shrunk else 0


def check_room(plan: Plan, scratch: str) -> None:
    """Refuse when the overlays would not fit in the scratch folder."""
    need = sum(overlay_estimate(m) for m in plan.shrinks)
    if not need:
        return
    where = scratch_dir(scratch)
    free = free_bytes(str(where))
    if need > free:
        raise SafetyError(
            f"the shrink needs up to {human_size(need)} of scratch space for its copy-on-write"
            f" views, and {where} has {human_size(free)} free: pass --scratch DIR (a folder on"
            " a disk that is neither source nor target, or a store); nothing was written"
        )


@dataclass
class ShrunkPlan:
    """The Plan with shrunk volumes, and each shrunk move's view (by move name)."""

    plan: Plan
    views: dict[str, resize.Shrunk]
    done: list[str] = field(default_factory=list)  # what each shrink did, for the result

    def discard(self) -> None:
        for shrunk in self.views.values():
            shrunk.discard()
        self.views.clear()


def shrink_all(plan: Plan, base_of: BaseOf, scratch: str) -> ShrunkPlan:
    """Resize every shrunk move's volume in its own view; on failure nothing is left behind."""
    done = ShrunkPlan(plan, {})
    where = scratch_dir(scratch)
    moves = []
    try:
        for move in plan.moves:
            if not move.shrunk or move.volume is None:
                moves.append(move)
                continue
            shrunk = resize.shrink(base_of(move), move.volume, move.target_size, where, move.name)
            done.views[move.name] = shrunk
            moves.append(replace(move, volume=shrunk.volume))
            done.done.append(
                f"{move.name}: {move.volume.fstype} shrunk from {human_size(move.source.size)}"
                f" to {human_size(move.target_size)} in a copy-on-write view"
                f" ({human_size(shrunk.changes.changed_bytes)} rewritten by its resizer; the"
                " source was not written)"
            )
    except BaseException:
        done.discard()
        raise
    done.plan = replace(plan, moves=tuple(moves))
    return done


Overlay = tuple[int, Changes]  # an open overlay file and what its resizer changed


def read_tasks(  # noqa: PLR0917 (one read plan, named as the pipeline names it)
    region: str,
    used: tuple[Extent, ...],
    src: DirectFile | int | ByteSource,
    source_start: int,
    overlay: Overlay | None,
    chunk: int,
) -> Iterator[ReadTask]:
    """The pipeline's reads of a volume's ``used`` extents (volume offsets), chunk by chunk,
    from ``src`` at ``source_start``; a shrunk volume's pieces in the ranges its resizer
    changed come from its overlay instead (cut where a chunk enters or leaves them)."""
    changed = overlay[1].ranges if overlay else ()
    for piece in extents.split(used, chunk):
        inside = [(e, True) for e in extents.intersect((piece,), changed)]
        outside = [(e, False) for e in extents.subtract((piece,), changed)]
        for part, from_overlay in sorted(inside + outside, key=lambda t: t[0].start):
            if from_overlay and overlay:
                yield ReadTask(region, part.start, overlay[0], part.start, part.length)
            else:
                yield ReadTask(region, part.start, src, source_start + part.start, part.length)


def open_overlay(shrunk: resize.Shrunk) -> int:
    return os.open(shrunk.changes.overlay, os.O_RDONLY | os.O_CLOEXEC)
