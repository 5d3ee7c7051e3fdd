"""The Windows part of the pass: each Windows volume and each volume with Windows boot files
is mounted (ntfs-3g), then

- facts: computer name, sysprep state (generalized or not) and machine SID of every Windows,
  and a warning when a non-generalized Windows becomes another machine (duplicate SIDs);
- ``--hostname``: the computer name, in the control set Select\\Current names;
- an MBR disk whose partitions moved or whose signature changed, or a GPT disk with new ids:
  the BCD store (\\Boot\\BCD on an NTFS system partition, or \\EFI\\Microsoft\\Boot\\BCD on the
  ESP, edited in a copy and put back with mtools), SYSTEM\\MountedDevices and BOOTSECT.* copies.

Hibernated, dirty or encrypted Windows volumes are never opened (listed with the reason). The
hive work is engine/postcopy/windows.py; a hive with a pending log is refused there.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from clonebay.engine.postcopy import windows, windows_boot
from clonebay.engine.postcopy.changes import Skip
from clonebay.engine.postcopy.esp import fetch, put
from clonebay.engine.postcopy.mounts import volume
from clonebay.engine.postcopy.systems import Installed
from clonebay.errors import DeviceError, InputError

if TYPE_CHECKING:
    from clonebay.engine.postcopy.apply import Pass

ESP_BCD = "EFI/Microsoft/Boot/BCD"


def check_name(job: Pass) -> None:
    """A computer name Windows takes, checked before anything is written (Windows allows
    15 characters where Linux allows 63)."""
    if job.options.hostname and job.survey.of_kind("windows"):
        windows.validate_computer_name(job.options.hostname)


def _disk_move(job: Pass) -> windows_boot.DiskMove | None:
    """What changed that Windows' boot data names: MBR offsets or signature, GPT GUIDs."""
    table = job.survey.report.table
    ids = job.id_map
    if table.kind == "msdos":
        new_sig = int(table.disk_id, 16) if table.disk_id else 0
        old_sig = int(ids.disk[0], 16) if ids.disk else new_sig
        moved = job.facts.moved
        if old_sig == new_sig and not moved:
            return None
        offsets = {}
        for part in table.partitions:
            old = moved.get(part.number, (part.start, part.start))[0]
            offsets[old] = part.start
        return windows_boot.DiskMove(old_sig, new_sig, offsets, {}, table.sector_size)
    if table.kind == "gpt" and ids.parts:
        guids = {uuid.UUID(old): uuid.UUID(new) for old, new in ids.parts.items()}
        if ids.disk:
            guids[uuid.UUID(ids.disk[0])] = uuid.UUID(ids.disk[1])
        return windows_boot.DiskMove(0, 0, {}, guids, table.sector_size)
    return None


def run_windows(job: Pass) -> None:
    systems = [i for i in job.survey.installed if i.kind in {"windows", "windows-boot"}]
    for inst in systems:
        if not inst.editable:
            job.report.skipped.append(Skip(inst.where, "windows edits", inst.why_not))
    usable = [i for i in systems if i.editable]
    move = _disk_move(job)
    name = job.options.hostname
    if not usable or not (name or move or job.survey.of_kind("windows")):
        return
    writable = bool(name or move)
    with contextlib.ExitStack() as stack:
        roots = {
            inst.partition.number: stack.enter_context(
                volume(job.target, inst.partition, "ntfs", writable=writable)
            ).root
            for inst in usable
        }
        for inst in usable:
            if inst.kind == "windows":
                _identity(job, inst, roots[inst.partition.number])
        if move is not None:
            _boot_data(job, usable, roots, move)


def _identity(job: Pass, inst: Installed, root: Path) -> None:
    """Facts always; the computer name when asked. Hives the pass cannot read stop it only
    when it must edit them: for facts alone, the reason is a fact."""
    name = job.options.hostname
    try:
        facts = windows.windows_identity(root, inst.where)
    except InputError as exc:
        if name:
            raise
        job.report.facts.append(f"Windows on {inst.where}: its hives could not be read: {exc}")
        return
    job.report.facts += facts.facts()
    if not name:
        return
    warning = facts.warning()
    if warning:
        job.report.warnings.append(warning)
    system = windows.config_hive(root, "SYSTEM")
    if system is None:
        raise DeviceError(f"{inst.where}: the SYSTEM hive is gone")
    job.report.changes += windows.set_computer_name(system, name, inst.where)


def _boot_data(
    job: Pass, usable: list[Installed], roots: dict[int, Path], move: windows_boot.DiskMove
) -> None:
    """BCD stores, MountedDevices and BOOTSECT copies of every Windows of the disk."""
    old_sig, new_sig = move.old_signature, move.new_signature
    for inst in usable:
        root = roots[inst.partition.number]
        bcd = windows.find(root, "Boot", "BCD")
        system = windows.config_hive(root, "SYSTEM") if inst.kind == "windows" else None
        patch = windows_boot.patch_mbr_boot(
            old_sig,
            new_sig,
            move.offsets,
            where=inst.where,
            bcd=bcd,
            system_hive=system,
            volume_roots=[root],
            guids=move.guids,
            sector_size=move.sector_size,
        )
        job.report.changes += patch.changes
        job.report.facts += patch.facts
    for esp in job.survey.of_kind("esp"):
        if esp.editable:
            _esp_bcd(job, esp, move)


def _esp_bcd(job: Pass, esp: Installed, move: windows_boot.DiskMove) -> None:
    """The UEFI BCD store on the ESP: copied out, patched, put back and read back."""
    with tempfile.TemporaryDirectory(prefix="clonebay-bcd-") as tmp:
        local = Path(tmp) / "BCD"
        if not fetch(job.target, esp, ESP_BCD, local):
            return  # no Windows Boot Manager on this ESP
        patch = windows_boot.patch_mbr_boot(
            move.old_signature,
            move.new_signature,
            move.offsets,
            where=esp.where,
            bcd=local,
            guids=move.guids,
            sector_size=move.sector_size,
        )
        if patch.changes:
            put(job.target, esp, local, ESP_BCD)
        job.report.changes += patch.changes
        job.report.facts += patch.facts
