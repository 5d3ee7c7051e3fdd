"""Windows' boot data after a move: the BCD store's device elements, SYSTEM\\MountedDevices and
BOOTSECT.* copies of boot sectors name partitions by (MBR disk signature, byte offset) or by
GPT GUIDs. When an MBR partition moved or the disk got a new signature, or GPT GUIDs were
renewed (``--new-ids``), ``patch_mbr_boot`` rewrites them; every hive is checked clean (no
pending log) before any is written, and every edit is read back.

``patch_mbr_boot(old_signature, new_signature, offsets, *, where, bcd, system_hive,
volume_roots, guids) -> BootPatch``: ``offsets`` maps the old byte offset of EVERY partition of
the disk to its new one (unmoved ones to themselves); a value naming an offset not in it is
left alone and reported in ``facts``.
"""

from __future__ import annotations

import os
import re
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.engine.postcopy import hive
from clonebay.engine.postcopy.changes import Change
from clonebay.engine.postcopy.hive import Value
from clonebay.errors import VerifyError

# --- MBR moves ----------------------------------------------------------------------------------

# A BCD device element ("Element" of an element whose type has format 1 (device), such as
# 11000001 ApplicationDevice and 21000001 OSDevice), as bcdedit writes it for a partition.
# Layout from mistyprojects "BCDEdit: Devices Partition - Data" (a Windows 8.1 MBR example,
# 0x58 bytes) and jc-lab "bcd_device_element_t": 0x00 GUID additional options, 0x10 u32 device
# type (6 partition, 5 boot, 8 locate), 0x14 u32 flags, 0x18 u32 size of the data from 0x10
# (0x48), 0x1C u32, 0x20 MBR: u64 partition byte offset + 8 zero bytes (GPT: partition GUID),
# 0x30 u32, 0x34 u32 partition style (1 MBR, 0 GPT), 0x38 MBR: u32 disk signature + 12 zero
# bytes (GPT: disk GUID), then 16 zero bytes.
BCD_DEVICE = struct.Struct("<16sIIIIQ8sIII12s")
BCD_PARTITION, BCD_MBR, BCD_GPT = 6, 1, 0
BCD_OFFSET_AT, BCD_SIGNATURE_AT = 0x20, 0x38
# SYSTEM\MountedDevices: an MBR partition is (u32 disk signature, u64 partition byte offset);
# a GPT one is "DMIO:ID:" and the partition GUID (mixed-endian, as uuid's bytes_le).
MOUNTED_MBR = struct.Struct("<IQ")
DMIO = b"DMIO:ID:"
# A FAT/NTFS boot sector: OEM id at 0x03, hidden sectors (the partition's start) at 0x1C.
HIDDEN_SECTORS = struct.Struct("<I")
HIDDEN_AT = 0x1C
BOOT_SECTOR_COPIES = ("bootsect.bak", "bootsect.dat", "bootsect.lnx")


@dataclass(frozen=True)
class DiskMove:
    old_signature: int
    new_signature: int
    offsets: Mapping[int, int]  # old partition byte offset -> new (every partition of the disk)
    guids: Mapping[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    sector_size: int = 512


@dataclass
class BootPatch:
    where: str
    changes: list[Change] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)


def _mbr(signature: int, offset: int) -> str:
    return f"signature 0x{signature:08x} offset {offset}"


def _remap_or_fact(
    move: DiskMove, signature: int, offset: int, what: str, patch: BootPatch
) -> tuple[int, int] | None:
    """The new (signature, offset) of a partition of the moved disk; None when it stays (or is
    not on that disk). A partition of that disk missing from the move becomes a fact."""
    if signature != move.old_signature:
        return None
    if offset not in move.offsets:
        patch.facts.append(
            f"{what}: {_mbr(signature, offset)} is no partition the move knows; left alone"
        )
        return None
    new = (move.new_signature, move.offsets[offset])
    return None if new == (signature, offset) else new


def _patch_device(data: bytes, move: DiskMove, what: str, patch: BootPatch) -> bytes | None:
    """A device element naming a partition of the moved disk, patched; None when it is not."""
    if len(data) < BCD_DEVICE.size:
        return None
    fields = BCD_DEVICE.unpack_from(data)
    patched = bytearray(data)
    if fields[1] == BCD_PARTITION and fields[8] == BCD_MBR:
        before = (fields[9], fields[5])
        new = _remap_or_fact(move, *before, what, patch)
        if new is None:
            return None
        struct.pack_into("<Q", patched, BCD_OFFSET_AT, new[1])
        struct.pack_into("<I", patched, BCD_SIGNATURE_AT, new[0])
        patch.changes.append(Change(patch.where, what, _mbr(*before), _mbr(*new), "read back"))
        return bytes(patched)
    if fields[1] == BCD_PARTITION and fields[8] == BCD_GPT and move.guids:
        ids = [uuid.UUID(bytes_le=data[at : at + 16]) for at in (BCD_OFFSET_AT, BCD_SIGNATURE_AT)]
        new_ids = [move.guids.get(old, old) for old in ids]
        if new_ids == ids:
            return None
        for at, guid in zip((BCD_OFFSET_AT, BCD_SIGNATURE_AT), new_ids, strict=True):
            patched[at : at + 16] = guid.bytes_le
        text = "partition {} disk {}"
        patch.changes.append(
            Change(patch.where, what, text.format(*ids), text.format(*new_ids), "read back")
        )
        return bytes(patched)
    return None


def patch_bcd(bcd: Path, move: DiskMove, where: str) -> BootPatch:
    """Patch every device element of the BCD store that names a partition of the moved disk
    (MBR: signature and offset; GPT: partition and disk GUIDs found in ``move.guids``)."""
    hive.check_clean(bcd)  # values still in its log would be missed, not only left unwritten
    patch = BootPatch(where)
    edits: dict[str, list[Value]] = {}
    for key, values in hive.read_tree(bcd, "Objects").items():
        parts = key.strip("\\").split("\\")
        element = values.get("element")
        if len(parts) != 4 or parts[2].lower() != "elements" or element is None:
            continue
        if not re.fullmatch(r"[0-9a-fA-F]{8}", parts[3]) or (int(parts[3], 16) >> 24) & 0xF != 1:
            continue  # format nibble 1: a device element
        data = _patch_device(element.data, move, f"bcd-device {parts[1]} {parts[3]}", patch)
        if data is not None:
            edits["\\".join(parts)] = [Value(element.name, element.kind, data)]
    if edits:
        hive.write_values(bcd, edits)
    return patch


def patch_mounted_devices(system_hive: Path, move: DiskMove, where: str) -> BootPatch:
    """Patch SYSTEM\\MountedDevices: MBR values of the moved disk, and GPT values when a
    partition GUID map is given."""
    hive.check_clean(system_hive)
    patch = BootPatch(where)
    values = hive.read_key(system_hive, "MountedDevices") or {}
    updates, others = [], 0
    for value in values.values():
        what = f"mounted-device {value.name}"
        if len(value.data) == MOUNTED_MBR.size:
            signature, offset = MOUNTED_MBR.unpack(value.data)
            others += signature != move.old_signature
            new = _remap_or_fact(move, signature, offset, what, patch)
            if new is not None:
                updates.append(Value(value.name, value.kind, MOUNTED_MBR.pack(*new)))
                before, after = _mbr(signature, offset), _mbr(*new)
                patch.changes.append(Change(where, what, before, after, "read back"))
        elif len(value.data) == len(DMIO) + 16 and value.data.startswith(DMIO):
            old = uuid.UUID(bytes_le=value.data[len(DMIO) :])
            if old in move.guids and move.guids[old] != old:
                data = DMIO + move.guids[old].bytes_le
                updates.append(Value(value.name, value.kind, data))
                patch.changes.append(
                    Change(where, what, str(old), str(move.guids[old]), "read back")
                )
    if others:
        fact = f"MountedDevices: {others} value(s) name partitions of other disks; left alone"
        patch.facts.append(fact)
    if updates:
        hive.write_values(system_hive, {"MountedDevices": updates})
    return patch


def _is_boot_sector(sector: bytes) -> bool:
    """An NTFS or FAT boot sector: printable OEM id, "NTFS" or a "FAT" type, 0x55AA."""
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return False
    oem = sector[3:11]
    if not all(32 <= b < 127 for b in oem):
        return False
    return oem == b"NTFS    " or sector[0x36:0x39] == b"FAT" or sector[0x52:0x57] == b"FAT32"


def patch_boot_sector_copies(root: Path, move: DiskMove, where: str) -> BootPatch:
    """Patch BOOTSECT.BAK/.DAT/bootsect.lnx at ``root`` whose hidden-sectors field names the old
    start sector of a moved partition (the boot sector copies Windows Boot Manager chains to)."""
    patch = BootPatch(where)
    starts = {old // move.sector_size: new // move.sector_size for old, new in move.offsets.items()}
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if entry.name.lower() not in BOOT_SECTOR_COPIES or not entry.is_file():
            continue
        with entry.open("rb") as f:
            sector = f.read(512)
        if not _is_boot_sector(sector):
            continue
        (hidden,) = HIDDEN_SECTORS.unpack_from(sector, HIDDEN_AT)
        if hidden not in starts or starts[hidden] == hidden or starts[hidden] > 0xFFFFFFFF:
            continue
        expected = bytearray(sector)
        HIDDEN_SECTORS.pack_into(expected, HIDDEN_AT, starts[hidden])
        with entry.open("r+b") as f:
            f.seek(HIDDEN_AT)
            f.write(HIDDEN_SECTORS.pack(starts[hidden]))
            f.flush()
            os.fsync(f.fileno())
        with entry.open("rb") as f:
            if f.read(512) != bytes(expected):
                raise VerifyError(f"{entry}: the patched hidden-sectors field did not read back")
        what = f"boot-sector-copy {entry.name}"
        before, after = f"hidden sectors {hidden}", f"hidden sectors {starts[hidden]}"
        patch.changes.append(Change(where, what, before, after, "read back"))
    return patch


def patch_mbr_boot(
    old_signature: int,
    new_signature: int,
    offsets: Mapping[int, int],
    *,
    where: str,
    bcd: Path | None = None,
    system_hive: Path | None = None,
    volume_roots: Sequence[Path] = (),
    guids: Mapping[uuid.UUID, uuid.UUID] | None = None,
    sector_size: int = 512,
) -> BootPatch:
    """Patch what names partitions of a moved MBR disk: the BCD store (\\Boot\\BCD on the
    system partition), SYSTEM\\MountedDevices and the BOOTSECT.* copies at each volume root.
    Every hive is checked clean before any is written; each edit is read back."""
    for store in (bcd, system_hive):
        if store is not None:
            hive.check_clean(store)  # refuse both before either is written
    move = DiskMove(old_signature, new_signature, offsets, dict(guids or {}), sector_size)
    result = BootPatch(where)
    parts = [patch_bcd(bcd, move, where)] if bcd else []
    parts += [patch_mounted_devices(system_hive, move, where)] if system_hive else []
    parts += [patch_boot_sector_copies(root, move, where) for root in volume_roots]
    for part in parts:
        result.changes += part.changes
        result.facts += part.facts
    return result
