"""New identities for a clone that will sit beside its source (``--new-ids``).

Two disks with the same disk GUID, partition GUIDs or filesystem UUIDs in one machine make
``root=UUID=...`` and fstab pick whichever the kernel saw first, and Windows takes the second
disk offline (a signature collision). The pass gives the target:

- a new disk GUID and new partition GUIDs (GPT, ``sgdisk --randomize-guids``) or a new MBR
  disk signature (``sfdisk --disk-id``);
- new filesystem ids: ext2/3/4 UUID (``tune2fs -U`` after ``e2fsck -f -p``), swap UUID
  (``swaplabel -U``), FAT volume ID (the 4-byte serial of the boot sector and of the FAT32
  backup boot sector) and NTFS serial (8 bytes at 0x48 of the boot sector and of its backup in
  the volume's last sector), patched natively;

and returns the old -> new map of every id, so that the files naming them (fstab, crypttab,
grub.cfg, the initramfs's resume device, Windows' MountedDevices and BCD) can follow. Each new
id is read back by probing the target again.
"""

from __future__ import annotations

import os
import secrets
import struct
import uuid
from dataclasses import dataclass, field, replace

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.fixups import boot_sector_copies
from clonebay.engine.postcopy.changes import Change, PostcopyReport, Skip
from clonebay.engine.postcopy.systems import Installed, Survey
from clonebay.errors import DeviceError
from clonebay.system import loopdev
from clonebay.system.blockdev import TargetDevice
from clonebay.system.parttable import read_table
from clonebay.system.run import run

FAT_SERIAL = {"fat12": 0x27, "fat16": 0x27, "fat32": 0x43}  # BS_VolID offset in the boot sector
NTFS_SERIAL = 0x48  # u64


@dataclass
class IdMap:
    """Old -> new ids, as they are written in files (fstab's UUID=/PARTUUID= forms)."""

    fs: dict[str, str] = field(default_factory=dict)  # filesystem UUIDs
    parts: dict[str, str] = field(default_factory=dict)  # GPT partition GUIDs / MBR PARTUUIDs
    disk: tuple[str, str] | None = None  # disk GUID or MBR signature (0x...)

    def pairs(self) -> list[tuple[str, str]]:
        return [*self.fs.items(), *self.parts.items()]


def _new_disk_ids(target: str, survey: Survey, ids: IdMap) -> list[Change]:
    table = survey.report.table
    if table.kind == "gpt":
        run(["sgdisk", "--randomize-guids", target])
    elif table.kind == "msdos":
        run(["sfdisk", "--disk-id", target, f"0x{secrets.randbits(32) | 1:08x}"])
    else:
        return []
    after = read_table(target)
    if after.disk_id == table.disk_id:
        raise DeviceError(f"{target}: the disk id did not change ({table.disk_id})")
    ids.disk = (table.disk_id, after.disk_id)
    changes = [Change("disk", "disk id", table.disk_id, after.disk_id, "partition table read back")]
    old_parts = {p.number: p for p in table.partitions}
    for part in after.partitions:
        before = old_parts.get(part.number)
        if before is None:
            continue
        old, new = (
            _partuuid(table.kind, table.disk_id, before.number, before.guid),
            _partuuid(after.kind, after.disk_id, part.number, part.guid),
        )
        if old and new and old != new:
            ids.parts[old] = new
            if table.kind == "gpt":
                changes.append(Change(f"p{part.number}", "partition guid", old, new, "read back"))
    return changes


def _partuuid(kind: str, disk_id: str, number: int, guid: str) -> str:
    """How the kernel (and fstab's PARTUUID=) names a partition."""
    if kind == "gpt":
        return guid.lower()
    if kind == "msdos" and disk_id:
        return f"{int(disk_id, 16):08x}-{number:02x}"
    return ""


def _ext(target: str, inst: Installed, new: str) -> None:
    part = inst.partition
    dev = loopdev.attach(target, offset=part.start, size=part.size)
    try:
        run(["e2fsck", "-f", "-p", dev], ok_codes=(0, 1))
        run(["tune2fs", "-U", new, dev])
    finally:
        loopdev.detach(dev)


def _swap(target: str, inst: Installed, new: str) -> None:
    part = inst.partition
    dev = loopdev.attach(target, offset=part.start, size=part.size)
    try:
        run(["swaplabel", "-U", new, dev])
    finally:
        loopdev.detach(dev)


def _patch_serial(target: str, inst: Installed, value: bytes) -> None:
    fstype = inst.volume.fstype
    at = NTFS_SERIAL if fstype == "ntfs" else FAT_SERIAL[fstype]
    dev = TargetDevice(target)
    try:
        start = inst.partition.start
        boot = os.pread(dev.fd, 512, start)
        for copy in (start + offset for offset in boot_sector_copies(boot, fstype)):
            if copy + 512 <= inst.partition.end:
                dev.write_at(value, copy + at)
        dev.sync()
    finally:
        dev.close()


def _new_fs_id(target: str, inst: Installed) -> str:
    """Give the volume a new id; returns it as the prober formats it."""
    fstype = inst.volume.fstype
    if fstype.startswith("ext"):
        new = str(uuid.uuid4())
        _ext(target, inst, new)
        return new
    if fstype == "swap":
        new = str(uuid.uuid4())
        _swap(target, inst, new)
        return new
    if fstype in FAT_SERIAL:
        serial = secrets.randbits(32)
        _patch_serial(target, inst, struct.pack("<I", serial))
        return f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
    if fstype == "ntfs":
        serial = secrets.randbits(64)
        _patch_serial(target, inst, struct.pack("<Q", serial))
        return f"{serial:016X}"
    return ""


def renew(target: str, survey: Survey, report: PostcopyReport) -> IdMap:
    """New filesystem, disk and partition ids, each listed in ``report`` as soon as it is
    made and read back; the old -> new map for the files that name them. Two volumes that
    shared one id (a partition copied beside itself) get two new ones; files that named the
    shared id then name the first volume's, and the report says so."""
    ids = IdMap()
    made: dict[int, tuple[Installed, str]] = {}
    for inst in survey.installed:
        if not inst.volume.uuid:
            continue
        if not inst.editable:
            report.skipped.append(Skip(inst.where, "new filesystem id", inst.why_not))
            continue
        new = _new_fs_id(target, inst)
        if not new:
            why = f"{inst.volume.fstype} ids are not renewed"
            report.skipped.append(Skip(inst.where, "new filesystem id", why))
            continue
        made[inst.partition.number] = (inst, new)
        report.changes.append(Change(inst.where, "filesystem id", inst.volume.uuid, new, ""))
    after = {pr.partition.number: pr.volume for pr in inspect_disk(target).partitions}
    for number, (inst, want) in made.items():
        got = after.get(number)
        if got is None or got.uuid.lower() != want.lower():
            raise DeviceError(
                f"{inst.where}: the new filesystem id {want} did not read back"
                f" ({got.uuid if got else 'no volume'})"
            )
        old = inst.volume.uuid
        if old in ids.fs:
            report.facts.append(
                f"{inst.where} had the same filesystem id {old} as another volume: files that"
                f" named it now name {ids.fs[old]}"
            )
        else:
            ids.fs[old] = want
    report.changes[:] = [
        replace(c, checked="probe") if c.what == "filesystem id" else c for c in report.changes
    ]
    report.changes += _new_disk_ids(target, survey, ids)
    return ids
