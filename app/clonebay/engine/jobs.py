"""The jobs a user can start, in one place for the CLI and the TUI: save, restore, verify, info,
convert, and the dry-run plans of save and restore (what would be read or written, before
anything is). Restore and verify take an image directory, an image stream file, or a stream on
a binary file object (stdin); save writes a directory or a stream."""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from clonebay.engine.clone_state import (
    DiskSeen,
    InterruptedClone,
    clone_journal,
    interrupted_clone,
)
from clonebay.engine.convert import convert
from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.plan import Grow
from clonebay.engine.locked import check_keys
from clonebay.engine.regions import SourceRegion, source_regions
from clonebay.engine.rescue.files import PREFIX as HIT_PREFIX
from clonebay.engine.rescue.reader import RescueOptions
from clonebay.engine.rescue.save import rescue_map_path
from clonebay.engine.restore.directory import restore as restore_directory
from clonebay.engine.restore.directory import restore_many as restore_directory_many
from clonebay.engine.restore.placements import RestoreOptions, plan_target
from clonebay.engine.restore.shrinking import measurer
from clonebay.engine.restore.stream import STREAM_NOTE, restore_stream
from clonebay.engine.save import SaveOptions, save
from clonebay.engine.save_state import InterruptedSave, RegionSaved, interrupted_save
from clonebay.engine.target import checks
from clonebay.engine.target.fanout import StateSink, TargetOutcome
from clonebay.engine.verify import verify_image as verify_directory
from clonebay.engine.verify import verify_stream, verify_target
from clonebay.errors import UsageError
from clonebay.fs.keyring import Keyring
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.reader import ImageReader, VerifyReport
from clonebay.imaging.stream_convert import is_stream_file
from clonebay.imaging.stream_read import StreamEnd, StreamReader
from clonebay.model import Progress
from clonebay.system.blockdev import drop_cache
from clonebay.units import human_size

__all__ = [
    "DiskSeen",
    "InterruptedClone",
    "InterruptedSave",
    "RegionSaved",
    "RescueOptions",
    "RestoreOptions",
    "SaveOptions",
    "check_distinct",
    "clone_journal",
    "convert",
    "image_head_info",
    "image_info",
    "info_text",
    "interrupted_clone",
    "interrupted_save",
    "manifest_summary",
    "rescue_map_path",
    "restore",
    "restore_many",
    "restore_plan",
    "save",
    "save_plan",
    "summary_text",
    "verify_image",
    "verify_target",
]


@dataclass(frozen=True)
class PlanLine:
    name: str
    offset: int
    size: int
    copy: str
    fstype: str
    bytes_to_copy: int
    note: str = ""


@dataclass(frozen=True)
class JobPlan:
    """What a job would do, line by line; shown by --dry-run."""

    title: str
    lines: tuple[PlanLine, ...]
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.title,
            "regions": [vars(line) for line in self.lines],
            "bytes_to_copy": sum(line.bytes_to_copy for line in self.lines),
            "notes": list(self.notes),
        }

    def text(self) -> str:
        rows = [f"{self.title}", "  REGION    OFFSET       SIZE         FS         COPY    BYTES"]
        for ln in self.lines:
            rows.append(
                f"  {ln.name:<9} {human_size(ln.offset):<12} {human_size(ln.size):<12}"
                f" {ln.fstype or '-':<10} {ln.copy:<7} {human_size(ln.bytes_to_copy)}"
                + (f"  ({ln.note})" if ln.note else "")
            )
        total = sum(ln.bytes_to_copy for ln in self.lines)
        rows.append(f"  total to read: {human_size(total)}")
        rows.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(rows)


def _line(region: SourceRegion) -> PlanLine:
    vol = region.volume
    note = vol.reason if vol and vol.copy.value == "raw" else ""
    return PlanLine(
        region.name,
        region.disk_offset,
        region.size,
        region.copy,
        vol.fstype if vol else "",
        region.used_bytes,
        note,
    )


def save_plan(source: str, partition: int | None = None, keys: Keyring | None = None) -> JobPlan:
    """What ``save`` would read from ``source`` (nothing is written)."""
    report = inspect_disk(source, keys)
    check_keys(report, keys)
    regions = source_regions(report, partition)
    return JobPlan(
        f"save {source}: {report.table.kind} table, {len(regions)} regions",
        tuple(_line(r) for r in regions),
        report.warnings,
    )


def restore_plan(
    image: str | IO[bytes],
    target: str,
    region: str | None = None,
    grow: Grow = Grow.NONE,
    *,
    whole_disk: bool = False,
    fit: Grow = Grow.PROPORTIONAL,
    scratch: str = "",
) -> JobPlan:
    """Where ``restore`` would write each region, after every refusal the restore would make
    before its first write (the guard, size, sector size, a single volume over a partitioned
    disk); writes nothing. With ``grow`` and a larger target, partitions get the places and
    sizes of engine/layout/plan.py.

    A stream's plan needs only its MANIFEST record (the rest of the stream is not read)."""
    manifest = _manifest_before_data(image)
    options = RestoreOptions(
        region=region, grow=grow, whole_disk=whole_disk, fit=fit, scratch=scratch
    )
    directory = isinstance(image, str) and not is_stream_file(image)
    minimums = measurer(image, manifest, scratch) if isinstance(image, str) and directory else None
    plan = plan_target("restore", manifest, target, options, minimums=minimums)
    job, size, placements, grown = plan.job, plan.target_size, plan.placements, plan.grown
    checks.preflight(None, target)
    checks.check_job(job, size)
    sizes: dict[str, int] = {}
    least: dict[str, int] = {}
    notes: list[str] = []
    if not isinstance(image, str) or is_stream_file(image):
        notes.append(STREAM_NOTE)
    if grown is not None:
        sizes = {f"p{m.number}": m.target_size for m in grown.moves}
        least = {f"p{m.number}": m.minimum for m in grown.moves}
        notes.extend(grown.fixups)
        notes.extend(grown.notes)
        notes.append("the partition table is written anew for the new layout, last")
    elif plan.region is None:
        notes.append("raw areas (partition tables) are written last")
    lines = tuple(
        PlanLine(
            p.region.name,
            p.target_offset,
            sizes.get(p.region.name, p.region.size),
            p.region.copy,
            p.region.fstype,
            p.region.stats.copied_bytes or p.region.used_bytes,
            _grow_note(
                p.region.size, sizes.get(p.region.name, p.region.size), least.get(p.region.name, 0)
            ),
        )
        for p in placements
    )
    name = image if isinstance(image, str) else "-"
    return JobPlan(f"restore {name} -> {target} ({human_size(size)})", lines, tuple(notes))


def check_target(target: str) -> None:
    """The guard's refusals for a target a job will write (mounted, held, the live medium,
    stacked on something in use); for a receiver, before it joins a session."""
    checks.preflight(None, target)


def _grow_note(before: int, after: int, least: int = 0) -> str:
    if after < before:
        floor = f" (least {human_size(least)})" if least else ""
        return f"shrinks from {human_size(before)}{floor}"
    return f"grows from {human_size(before)}" if after > before else ""


def _manifest_before_data(image: str | IO[bytes]) -> Manifest:
    """An image directory's manifest, or a stream's MANIFEST record (counters still empty)."""
    if not isinstance(image, str):
        return StreamReader(image, "stdin").manifest
    if is_stream_file(image):
        with open(image, "rb") as f:
            return StreamReader(f, image).manifest
    with ImageReader(image) as reader:
        return reader.manifest


def _file_size(f: IO[bytes]) -> int:
    """Size of stdin redirected from a file (for progress), 0 for a pipe."""
    try:
        info = os.fstat(f.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def restore(
    image: str | IO[bytes],
    target: str,
    options: RestoreOptions | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Restore an image directory, an image stream file, or a stream read from a binary file
    object (stdin, a pipe) onto ``target``; returns warnings."""
    options = options or RestoreOptions()
    if not isinstance(image, str):
        return restore_stream(
            image, target, options, name="stdin", progress=progress, cancel=cancel
        )
    if is_stream_file(image):
        with open(image, "rb") as f:
            return restore_stream(f, target, options, name=image, progress=progress, cancel=cancel)
    return restore_directory(image, target, options, progress=progress, cancel=cancel)


def restore_many(
    image: str,
    targets: list[str],
    options: RestoreOptions | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    on_state: StateSink | None = None,
) -> list[TargetOutcome]:
    """Restore an image directory onto every target from one read (engine/target/fanout.py):
    one outcome per target. A stream is restored onto one target at a time (UsageError)."""
    if is_stream_file(image):
        raise UsageError(
            f"{image} is an image stream: it is restored onto one target at a time. Convert it"
            " into an image directory (clonebay convert) to restore it onto several at once;"
            " nothing was written"
        )
    return restore_directory_many(
        image, targets, options, progress=progress, cancel=cancel, on_state=on_state
    )


def check_distinct(targets: list[str]) -> None:
    """Refuse targets that are one another (the same disk twice, a partition of another
    target, a loop device over another target); nothing is written."""
    checks.check_distinct(targets)


def verify_image(
    image: str | IO[bytes], progress: Callable[[Progress], None] | None = None
) -> VerifyReport:
    """Check every frame of an image directory, or read an image stream through."""
    if not isinstance(image, str):
        return verify_stream(image, "stdin", _file_size(image), progress)
    if is_stream_file(image):
        with open(image, "rb") as f:
            return verify_stream(f, image, os.fstat(f.fileno()).st_size, progress)
    return verify_directory(image, progress)


def verify_saved(image: str, progress: Callable[[Progress], None] | None = None) -> VerifyReport:
    """Read a just-saved image back from its medium (its files' cached pages dropped first, so
    a store that lost or mangled a write is caught, not the page cache's copy) and check every
    frame: what a save on a USB stick or a share says before "saved"."""
    paths = [Path(image)] if not os.path.isdir(image) else list(Path(image).rglob("*"))
    for path in paths:
        if path.is_file():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # verify names a file it cannot open
            try:
                drop_cache(fd)
            finally:
                os.close(fd)
    return verify_image(image, progress)


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    totals = manifest.totals
    return {
        "regions": len(manifest.regions),
        "packs": len(manifest.packs),
        "copied_bytes": totals.copied_bytes,
        "stored_bytes": totals.stored_bytes,
        "zero_bytes": totals.zero_bytes,
        "dedup_bytes": totals.dedup_bytes,
        "unreadable_bytes": totals.unreadable_bytes,
        "unreadable": [vars(u) for u in manifest.unreadable],
        "files_hit": [
            w.removeprefix(HIT_PREFIX) for w in manifest.warnings if w.startswith(HIT_PREFIX)
        ],
        "warnings": list(manifest.warnings),
    }


def summary_text(image: str, summary: dict[str, Any], seconds: float) -> str:
    copied, stored = summary["copied_bytes"], summary["stored_bytes"]
    rate = copied / seconds / 1e6 if seconds > 0 else 0.0
    ratio = copied / stored if stored else 0.0
    return (
        (
            f"saved {human_size(copied)} into {image} ({human_size(stored)} stored,"
            f" {ratio:.2f}x; {human_size(summary['zero_bytes'])} zeros and"
            f" {human_size(summary['dedup_bytes'])} duplicates not stored)"
            f" in {seconds:.1f} s, {rate:.0f} MB/s"
        )
        + "".join(
            f"\n  unreadable: {u['region']}, {u['length']} bytes at offset {u['offset']}"
            f" (zeros in the image)"
            for u in summary.get("unreadable", ())
        )
        + "".join(f"\n  hit: {line}" for line in summary.get("files_hit", ()))
    )


def image_info(image: str) -> dict[str, Any]:
    """The manifest of ``image`` as plain data (the image is fully checked on open; a stream
    file is read through, every record checked, for the manifest in its END record)."""
    if is_stream_file(image):
        with open(image, "rb") as f:
            end = None
            for event in StreamReader(f, image).events():
                end = event
            assert isinstance(end, StreamEnd)  # events() ends with StreamEnd or raises
            return _info(image, end.manifest)
    with ImageReader(image) as reader:
        return _info(image, reader.manifest)


def image_manifest(image: str) -> Manifest:
    """An image directory's manifest or a stream file's MANIFEST record (no data is read)."""
    return _manifest_before_data(image)


def image_head_info(image: str) -> dict[str, Any]:
    """What ``image_info`` says, read cheaply: a stream file's MANIFEST record only (its region
    counters are still empty; ``stored_bytes`` is the file's size), an image directory's manifest
    (checked on open). For listing images; restore and verify still read every record."""
    if not is_stream_file(image):
        return image_info(image)
    info = _info(image, _manifest_before_data(image))
    info["totals"]["stored_bytes"] = os.path.getsize(image)
    info["form"] = "stream"
    return info


def _info(image: str, m: Manifest) -> dict[str, Any]:
    return {
        "image": image,
        "format_version": m.format_version,
        "tool": m.tool,
        "created": m.created,
        "source": m.source.to_json(),
        "table": m.table.to_json(),
        "chunk_size": m.chunk_size,
        "codec": m.codec,
        "regions": [
            {
                "name": r.name,
                "kind": r.kind,
                "disk_offset": r.disk_offset,
                "size": r.size,
                "fstype": r.fstype,
                "label": r.label,
                "uuid": r.uuid,
                "state": r.state,
                "copy": r.copy,
                "used_bytes": r.used_bytes,
                "stored_bytes": r.stats.stored_bytes,
                "reason": r.reason,
                "notes": list(r.notes),
            }
            for r in m.regions
        ],
        "totals": m.totals.as_dict(),
        "warnings": list(m.warnings),
        "unreadable": [vars(u) for u in m.unreadable],
    }


def info_text(image: str, info: dict[str, Any]) -> str:
    src = info["source"]
    head = (
        f"{image}: clonebay image v{info['format_version']}, made {info['created']}"
        f" by {info['tool']}\n  source {src.get('path', '?')}"
        f" {src.get('model', '') or ''} {human_size(int(src.get('size', 0) or 0))},"
        f" table {info['table'].get('kind', '-')}"
    )
    rows = [head, "  REGION    OFFSET       SIZE         FS       LABEL        USED         STORED"]
    for r in info["regions"]:
        rows.append(
            f"  {r['name']:<9} {human_size(r['disk_offset']):<12} {human_size(r['size']):<12}"
            f" {r['fstype'] or '-':<8} {r['label'] or '-':<12} {human_size(r['used_bytes']):<12}"
            f" {human_size(r['stored_bytes'])}"
        )
    totals = info["totals"]
    rows.append(
        f"  total: {human_size(totals['raw_bytes'] + totals['zero_bytes'])} copied,"
        f" {human_size(totals['stored_bytes'])} stored"
    )
    rows.extend(f"  warning: {w}" for w in info["warnings"])
    return "\n".join(rows)
