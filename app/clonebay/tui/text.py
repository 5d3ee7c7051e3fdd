"""Words the screens use for disks, partitions and time: one place, so every screen names a
disk the same way (a technician matches the model, serial and size against the label on the
drive). No Textual here."""

from __future__ import annotations

from clonebay.engine import DiskReport
from clonebay.model import Disk
from clonebay.units import human_size


def disk_name(disk: Disk) -> str:
    """ "/dev/sdb, Samsung SSD 870 (S5Y1NX0R123456), 465.8 GiB, usb"."""
    parts = [disk.path]
    ident = disk.model or "unknown model"
    if disk.serial:
        ident += f" ({disk.serial})"
    parts += [ident, human_size(disk.size)]
    if disk.transport:
        parts.append(disk.transport)
    return ", ".join(parts)


def status_words(disk: Disk) -> list[str]:
    """Badges: live system, mounted, held, read-only, removable."""
    words = []
    if disk.is_live_medium:
        words.append("LIVE SYSTEM")
    if disk.mountpoints:
        words.append("mounted " + ", ".join(disk.mountpoints[:2]))
    if disk.holders:
        words.append("in use by " + ", ".join(disk.holders))
    if disk.read_only:
        words.append("read-only")
    if disk.removable:
        words.append("removable")
    return words


def partitions_summary(report: DiskReport) -> str:
    """ "p2 fat32 EFI 6.3/100.0 MiB · p4 ntfs Windows ..." (one line per disk in the table)."""
    if report.whole_disk is not None:
        whole = report.whole_disk
        if whole.fstype in ("unknown", ""):
            return "no partition table: blank or unknown data"
        return f"whole disk: {whole.fstype} {whole.label}".rstrip()
    if not report.partitions:
        return f"{report.table.kind} table, no partitions"
    items = []
    for pr in report.partitions:
        vol = pr.volume
        if vol is None:
            continue
        if vol.fstype in ("unknown", "empty-msr", ""):
            items.append(f"p{pr.partition.number} {human_size(pr.partition.size)}")
            continue
        label = f" {vol.label}" if vol.label else ""
        items.append(
            f"p{pr.partition.number} {vol.fstype}{label}"
            f" {human_size(vol.used_bytes)}/{human_size(pr.partition.size)}"
        )
    return " · ".join(items)


def contents_lines(report: DiskReport) -> list[str]:
    """What is on a disk now, one line per partition (the Confirm modal's list)."""
    if report.whole_disk is not None:
        whole = report.whole_disk
        if whole.fstype in ("unknown", ""):
            return ["no partition table and no filesystem: blank, or data clonebay does not know"]
        return [f"whole disk: {whole.fstype} {whole.label} {human_size(whole.used_bytes)} used"]
    lines = [f"{report.table.kind} partition table"]
    for pr in report.partitions:
        vol = pr.volume
        what = "extended" if vol is None else vol.fstype
        label = f' "{vol.label}"' if vol is not None and vol.label else ""
        used = f", {human_size(vol.used_bytes)} used" if vol is not None else ""
        lines.append(
            f"p{pr.partition.number}: {what}{label}, {human_size(pr.partition.size)}{used}"
        )
    return lines


def region_name(region: str) -> str:
    """The pipeline names a clone's regions by partition number ("4"): show "p4"."""
    return f"p{region}" if region.isdigit() else region


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def serial_tail(serial: str) -> str:
    """The characters the user types to confirm a disk: the last four of its serial."""
    return serial.strip()[-4:].upper()


def short_reason(reason: str, path: str) -> str:
    """The guard's refusal cut to its first clause, without the device's own name (the table
    row names it): "/dev/sdb is mounted (/mnt): unmount it first; ..." -> "is mounted (/mnt)"."""
    depth, cut = 0, len(reason)
    for i, ch in enumerate(reason):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and reason.startswith((": ", "; "), i):
            cut = i
            break
    head = reason[:cut]
    for prefix in (f"the target {path} ", f"{path} "):
        head = head.removeprefix(prefix)
    return head


def created_text(created: str) -> str:
    """ "2025-03-14T09:30:00Z" -> "2025-03-14 09:30 UTC" (the manifest's time is UTC)."""
    if len(created) >= 16 and created[10] == "T":
        return f"{created[:10]} {created[11:16]} UTC"
    return created
