"""What a save left in an image folder it did not finish, told before anyone goes on with it.

A save writes its manifest last; until then a kill, a crash or an unplugged disk leaves an
incomplete image, and a save into a folder keeps a checkpoint in it every few seconds
(imaging/checkpoint.py). A frontend that is about to save into such a folder says what is
there — which disk it was saved from, how much is saved, whether it was a rescue — and offers
to go on (``save --resume``) or to start again. The checkpoint is read and checked here as
``--resume`` would read it, so "can be resumed" means the engine will take it; whether the
source is still the same disk is for the save itself to check (engine/resume/identity.py).

The checkpoint keeps no clock: the times come from the folder. The image folder's own
modification time is when its last top-level entry was made, ``resume/`` at the first
checkpoint (``checkpoint_every`` seconds into the save, 5 by default), so it tells when the
save began to within those seconds; ``checkpoint.json``'s is when the last one was taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clonebay.errors import ClonebayError
from clonebay.imaging import checkpoint, spec


@dataclass(frozen=True)
class RegionSaved:
    """A region the interrupted save reached: its bytes saved (data, zeros and unreadable
    ranges) out of those in use; ``closed``: saved whole."""

    name: str
    saved_bytes: int
    used_bytes: int
    closed: bool


@dataclass(frozen=True)
class InterruptedSave:
    """An incomplete image and what its checkpoint says. ``problem`` is why it cannot be
    resumed ("" when it can); the other fields are then what could be read."""

    image: str
    source_path: str = ""  # the source as it was named then (its node may differ now)
    source_model: str = ""
    source_serial: str = ""
    source_size: int = 0
    regions: tuple[RegionSaved, ...] = ()
    stored_bytes: int = 0  # what the packs hold up to the checkpoint
    rescue_map: str = ""  # a rescue's map ("": not a rescue)
    begun: float | None = None  # seconds since the epoch, to within the first checkpoint
    checkpointed: float | None = None  # when the last checkpoint was taken
    problem: str = ""

    @property
    def saved_bytes(self) -> int:
        return sum(r.saved_bytes for r in self.regions)

    @property
    def rescue(self) -> bool:
        return bool(self.rescue_map)

    @property
    def resumable(self) -> bool:
        return not self.problem


def interrupted_save(image: str) -> InterruptedSave | None:
    """What the incomplete image ``image`` holds, or None when it is not one (no such folder,
    a complete image, or a folder that is not an image's)."""
    path = Path(image)
    if not (path / spec.PACKS_DIR).is_dir() or (path / spec.MANIFEST_NAME).exists():
        return None
    begun = _mtime(path)
    if not checkpoint.exists(path):
        return InterruptedSave(
            image,
            begun=begun,
            problem="it has no checkpoint (it stopped before its first one, or was made by a"
            " clonebay without --resume)",
        )
    try:
        point = checkpoint.load(path)
    except ClonebayError as exc:
        return InterruptedSave(image, begun=begun, problem=exc.message)
    regions = [RegionSaved(e.name, e.stats.copied_bytes, e.used_bytes, True) for e in point.regions]
    stored = sum(p.size for p in point.packs) + point.pack_length
    if point.open is not None:
        entry = point.open.entry
        saved = point.open.stats.copied_bytes
        regions.append(RegionSaved(entry.name, saved, entry.used_bytes, False))
    recorded = point.job.get("source")
    source = recorded if isinstance(recorded, dict) else {}
    return InterruptedSave(
        image,
        source_path=str(source.get("path", "")),
        source_model=str(source.get("model", "")),
        source_serial=str(source.get("serial", "")),
        source_size=int(source.get("size", 0) or 0),
        regions=tuple(regions),
        stored_bytes=stored,
        rescue_map=str(point.job.get("rescue_map", "") or ""),
        begun=begun,
        checkpointed=_mtime(path / checkpoint.FOLDER / checkpoint.STATE),
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
