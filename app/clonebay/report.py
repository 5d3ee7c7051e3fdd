"""Disk listings and probe reports as text tables and as JSON-ready dicts (CLI and logs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from clonebay.system.parttypes import type_name
from clonebay.units import human_size

if TYPE_CHECKING:  # types only: `clonebay list` needs none of the probe's code
    from clonebay.engine.inspect import DiskReport
    from clonebay.model import Disk, Volume
    from clonebay.system.smart import Health
    from clonebay.system.tape import TapeDrive


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_disk_table(disks: Sequence[Disk], health: Mapping[str, Health]) -> str:
    """One row per disk; below the table, the SMART reasons of each worn or failing disk."""
    if not disks:
        return "no disks found"
    rows = [("DISK", "SIZE", "TRANSPORT", "HEALTH", "MODEL", "SERIAL", "PARTS", "STATUS")]
    for d in disks:
        status = []
        if d.is_live_medium:
            status.append("live system")
        if d.mountpoints:
            status.append("mounted " + ",".join(d.mountpoints[:2]))
        if d.holders:
            status.append("held by " + ",".join(d.holders))
        if d.removable:
            status.append("removable")
        if d.read_only:
            status.append("read-only")
        rows.append(
            (
                d.path,
                human_size(d.size),
                d.transport or "-",
                health[d.path].verdict.value if d.path in health else "-",
                d.model or "-",
                d.serial or "-",
                str(len(d.partitions)),
                "; ".join(status) or "free",
            )
        )
    worrying = [f"{d.path}: {h.text()}" for d in disks if (h := health.get(d.path)) and h.worrying]
    return "\n".join([_table(rows), *worrying])


def format_tape_table(tapes: Sequence[TapeDrive]) -> str:
    """Tape drives, as targets of the stream form (``clonebay save DISK /dev/nst0``)."""
    rows = [("TAPE", "REWINDS", "MODEL", "SERIAL", "USE AS")]
    for t in tapes:
        model = " ".join(part for part in (t.vendor, t.model) if part) or "-"
        rows.append((t.path, t.rewind_path, model, t.serial or "-", "image stream target"))
    return _table(rows)


def tapes_json(tapes: Sequence[TapeDrive]) -> list[dict[str, Any]]:
    return [
        {
            "kind": "tape",
            "path": t.path,
            "rewind_path": t.rewind_path,
            "vendor": t.vendor,
            "model": t.model,
            "serial": t.serial,
            "stream_target": True,
        }
        for t in tapes
    ]


def disks_json(disks: Sequence[Disk], health: Mapping[str, Health]) -> list[dict[str, Any]]:
    return [
        {
            "path": d.path,
            "size": d.size,
            "model": d.model,
            "serial": d.serial,
            "wwn": d.wwn,
            "transport": d.transport,
            "removable": d.removable,
            "read_only": d.read_only,
            "rotational": d.rotational,
            "logical_sector_size": d.logical_sector_size,
            "physical_sector_size": d.physical_sector_size,
            "partitions": list(d.partitions),
            "mountpoints": list(d.mountpoints),
            "holders": list(d.holders),
            "in_use": d.in_use,
            "live_medium": d.is_live_medium,
            "by_id": list(d.by_id),
            "health": health[d.path].as_dict() if d.path in health else None,
        }
        for d in disks
    ]


def _copy_text(volume: Volume) -> str:
    if volume.reason and volume.copy.value == "raw":
        return f"raw: {volume.reason}"
    return volume.copy.value


def format_disk_report(report: DiskReport, health: Health) -> str:
    table = report.table
    head = f"{report.path}: {human_size(table.disk_size)}, partition table {table.kind}"
    if table.disk_id:
        head += f", disk id {table.disk_id}"
    lines = [head, f"health: {health.text()}"]
    rows = [("#", "START", "SIZE", "TYPE", "FS", "LABEL", "USED", "STATE", "COPY")]
    volumes: list[tuple[str, str, str, str, Volume | None]] = []
    if report.whole_disk is not None:
        volumes.append(("-", "0", human_size(table.disk_size), "whole disk", report.whole_disk))
    for pr in report.partitions:
        p = pr.partition
        kind = type_name(p.type_id) + (f" [{p.kind}]" if p.kind != "primary" else "")
        volumes.append((str(p.number), human_size(p.start), human_size(p.size), kind, pr.volume))
    for number, start, size, kind, vol in volumes:
        if vol is None:
            rows.append((number, start, size, kind, "-", "", "", "", "container"))
            continue
        rows.append(
            (
                number,
                start,
                size,
                kind,
                vol.fstype,
                vol.label,
                human_size(vol.used_bytes),
                vol.state.value,
                _copy_text(vol),
            )
        )
    lines.append(_table(rows))
    for number, _, _, _, vol in volumes:
        for note in vol.notes if vol else ():
            lines.append(f"  note ({number}): {note}")
    lines.extend(f"  warning: {w}" for w in report.warnings)
    return "\n".join(lines)


def volume_json(volume: Volume) -> dict[str, Any]:
    return {
        "fstype": volume.fstype,
        "label": volume.label,
        "uuid": volume.uuid,
        "size": volume.size,
        "used_bytes": volume.used_bytes,
        "block_size": volume.block_size,
        "state": volume.state.value,
        "copy": volume.copy.value,
        "reason": volume.reason,
        "notes": list(volume.notes),
        "extents": len(volume.used),
    }


def disk_json(report: DiskReport, health: Health) -> dict[str, Any]:
    t = report.table
    return {
        "path": report.path,
        "size": t.disk_size,
        "health": health.as_dict(),
        "sector_size": t.sector_size,
        "table": t.kind,
        "disk_id": t.disk_id,
        "whole_disk": volume_json(report.whole_disk) if report.whole_disk else None,
        "partitions": [
            {
                "number": pr.partition.number,
                "start": pr.partition.start,
                "size": pr.partition.size,
                "kind": pr.partition.kind,
                "type_id": pr.partition.type_id,
                "type": type_name(pr.partition.type_id),
                "name": pr.partition.name,
                "guid": pr.partition.guid,
                "flags": list(pr.partition.flags),
                "attributes": pr.partition.attributes,
                "volume": volume_json(pr.volume) if pr.volume else None,
            }
            for pr in report.partitions
        ],
        "warnings": list(report.warnings),
    }
