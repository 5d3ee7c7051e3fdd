"""Disk layouts as the Plan, Confirm and Disks screens draw them: rows of (name, start, size,
filesystem, label, used, copy, note) on a disk of a given size, built from the engine's
DiskReport, Plan and JobPlan. Pure data: no Textual here, so it is easy to test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clonebay.engine import DiskReport, JobPlan, Plan
from clonebay.model import Volume, VolumeState
from clonebay.system.parttypes import type_name
from clonebay.units import human_size


@dataclass(frozen=True)
class LayoutRow:
    name: str
    start: int
    size: int
    fstype: str = ""
    label: str = ""
    used: int | None = None
    copy: str = ""
    note: str = ""


@dataclass(frozen=True)
class Layout:
    title: str
    disk_size: int
    rows: tuple[LayoutRow, ...]
    notes: tuple[str, ...] = ()


ENCRYPTED = ("bitlocker", "luks")


def told_below(volume: Volume | None) -> bool:
    """An encrypted volume or a hibernated Windows: the Plan and the disk details say what it
    means in full below the layouts (widgets/locked_panel.py), the tables only name it."""
    return volume is not None and (
        volume.fstype in ENCRYPTED or volume.state is VolumeState.HIBERNATED
    )


def _copy(volume: Volume | None) -> tuple[str, str]:
    if volume is None:
        return "", "container"
    if told_below(volume):
        whole = "copied whole" if volume.copy.value == "raw" else "used blocks"
        return volume.copy.value, f"{volume.state.value}, {whole}"
    note = volume.reason if volume.copy.value == "raw" else ""
    if volume.state.value not in ("clean", "unknown"):
        note = f"{volume.state.value}; {note}" if note else volume.state.value
    return volume.copy.value, note


def disk_layout(title: str, report: DiskReport) -> Layout:
    """What is on a disk now."""
    table = report.table
    if report.whole_disk is not None:
        whole = report.whole_disk
        copy, note = _copy(whole)
        row = LayoutRow(
            "disk", 0, table.disk_size, whole.fstype, whole.label, whole.used_bytes, copy, note
        )
        title = f"{title}: {human_size(table.disk_size)}, no partition table"
        return Layout(title, table.disk_size, (row,), report.warnings)
    rows = []
    for pr in report.partitions:
        p, vol = pr.partition, pr.volume
        copy, note = _copy(vol)
        if not note and vol is not None and vol.fstype in ("unknown", ""):
            note = type_name(p.type_id)
        rows.append(
            LayoutRow(
                f"p{p.number}",
                p.start,
                p.size,
                vol.fstype if vol else "extended",
                vol.label if vol else "",
                vol.used_bytes if vol else None,
                copy,
                note,
            )
        )
    title = f"{title}: {human_size(table.disk_size)}, {table.kind}"
    return Layout(title, table.disk_size, tuple(rows), report.warnings)


def clone_layouts(plan: Plan, source: str, target: str) -> tuple[Layout, Layout]:
    """The source as it is and the target as the plan lays it out."""
    src_rows, dst_rows = [], []
    why: list[str] = []
    for m in plan.moves:
        vol = m.volume
        copy, note = _copy(vol)
        if note and not told_below(vol):
            how = "is copied raw" if copy == "raw" else "is"
            why.append(f"p{m.number} {how}: {note}")
        fs, label = (vol.fstype, vol.label) if vol else ("", "")
        used = vol.used_bytes if vol else None
        src_rows.append(LayoutRow(f"p{m.number}", m.source.start, m.source.size, fs, label, used))
        shrinks = f"shrinks (least {human_size(m.minimum)})"
        change = ", ".join(
            w for w, on in (("grows", m.grown), (shrinks, m.shrunk), ("moves", m.moved)) if on
        )
        dst_rows.append(
            LayoutRow(f"p{m.number}", m.target_start, m.target_size, fs, label, used, copy, change)
        )
    return (
        Layout(
            f"Source {source}: {human_size(plan.source_size)}", plan.source_size, tuple(src_rows)
        ),
        Layout(
            f"Target {target}: {human_size(plan.target_size)}",
            plan.target_size,
            tuple(dst_rows),
            (*plan.fixups, *why),
        ),
    )


def save_layouts(source: str, plan: JobPlan, image: str) -> tuple[Layout, Layout]:
    """The source's regions, and what of each goes into the image (bytes to read)."""
    disk_size = max((ln.offset + ln.size for ln in plan.lines), default=0)
    src = tuple(
        LayoutRow(ln.name, ln.offset, ln.size, ln.fstype, "", ln.bytes_to_copy) for ln in plan.lines
    )
    dst, at = [], 0
    for ln in plan.lines:
        dst.append(LayoutRow(ln.name, at, ln.bytes_to_copy, ln.fstype, "", None, ln.copy))
        at += ln.bytes_to_copy
    why = tuple(
        f"{ln.name} is copied raw: {ln.note}"
        for ln in plan.lines
        if ln.note and ln.fstype not in ENCRYPTED
    )
    return (
        Layout(f"Source {source}: {human_size(disk_size)}", disk_size, src),
        Layout(f"Image: {human_size(at)} to read, into {image}", at, tuple(dst), plan.notes + why),
    )


def _region_note(region: Mapping[str, Any]) -> str:
    if region["kind"] == "raw-area":
        return "outside partitions: tables, boot code"
    return str(region["reason"]) if region["copy"] == "raw" else ""


def image_layout(info: Mapping[str, Any]) -> Layout:
    """The disk an image holds, from ``engine.jobs.image_info``."""
    src = info["source"]
    rows = tuple(
        LayoutRow(
            r["name"],
            r["disk_offset"],
            r["size"],
            r["fstype"],
            r["label"],
            r["used_bytes"],
            r["copy"],
            _region_note(r),
        )
        for r in sorted(info["regions"], key=lambda r: r["disk_offset"])
    )
    size = int(src.get("size", 0) or 0) or max((r.start + r.size for r in rows), default=0)
    title = f"Image of a {human_size(size)} disk, {info['table'].get('kind', '-')}"
    return Layout(title, size, rows, tuple(info["warnings"]))


def restore_layouts(
    info: Mapping[str, Any], plan: JobPlan, target: str, target_size: int
) -> tuple[Layout, Layout]:
    """The image's disk, and where each region lands on the target."""
    regions = {r["name"]: r for r in info["regions"]}
    rows = []
    for ln in sorted(plan.lines, key=lambda ln: ln.offset):
        r = regions.get(ln.name, {})
        rows.append(
            LayoutRow(
                ln.name,
                ln.offset,
                ln.size,
                ln.fstype,
                str(r.get("label", "")),
                ln.bytes_to_copy,
                ln.copy,
                ln.note,
            )
        )
    extra = target_size - image_layout(info).disk_size
    notes = list(plan.notes)
    if extra > 0:
        notes.append(f"{human_size(extra)} at the end of the target stays unpartitioned")
    target_layout = Layout(
        f"Target {target}: {human_size(target_size)}", target_size, tuple(rows), tuple(notes)
    )
    return image_layout(info), target_layout
