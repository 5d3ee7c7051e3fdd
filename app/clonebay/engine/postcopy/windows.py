"""Windows in the post-copy pass: its computer name, its sysprep state and machine SID, and the
boot data that names partitions by MBR disk signature and byte offset.

Everything here works offline on files: the caller mounts the NTFS volume (ntfs-3g) and passes
the root where ``Windows/System32/config/SYSTEM`` lives, or the hive files themselves. NTFS
names are case-insensitive but ntfs-3g looks them up case-sensitively, so ``find`` walks a
path one name at a time ignoring case. Hives go through hive.py (a hive with a pending
transaction log is refused with InputError before anything is written). Every edit comes back
as a ``Change`` that was read back after the write.

Public functions (``where`` is the caller's label for the volume, such as "p2 (NTFS, Windows)"):

- ``find(root, *names) -> Path | None``: a path under ``root``, matched case-insensitively.
- ``current_control_set(system_hive) -> str``: "ControlSet001" (from Select\\Current).
- ``computer_names(system_hive) -> dict[str, str]``: the four name values ("" when absent).
- ``validate_computer_name(name)``: UsageError unless ``name`` is a valid NetBIOS/DNS name.
- ``set_computer_name(system_hive, name, where) -> list[Change]``: validates first, then writes.
- ``sysprep_state(system_hive, software_hive) -> SysprepState``; ``machine_sid(sam_hive)``.
- ``windows_identity(root, where) -> WindowsIdentity``: ``.facts()`` and ``.warning()`` (the
  text to show when a non-generalized image is deployed).
- ``patch_mbr_boot(old_signature, new_signature, offsets, *, where, bcd, system_hive,
  volume_roots, guids) -> BootPatch``: after an MBR move or a new disk signature, patch the
  BCD store's device elements, SYSTEM\\MountedDevices and BOOTSECT.* copies. ``offsets`` maps
  the old byte offset of EVERY partition of the disk to its new one (unmoved ones to
  themselves): a value naming an offset not in it is left alone and reported in ``facts``.
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
from clonebay.errors import InputError, UsageError, VerifyError


def find(root: Path, *names: str) -> Path | None:
    """``root/names...`` with each name matched case-insensitively (NTFS semantics)."""
    here = root
    for name in names:
        exact = here / name
        if exact.exists():
            here = exact
            continue
        try:
            entries = {entry.name.lower(): entry for entry in here.iterdir()}
        except OSError:
            return None
        if name.lower() not in entries:
            return None
        here = entries[name.lower()]
    return here


def config_hive(root: Path, name: str) -> Path | None:
    """SYSTEM, SOFTWARE or SAM of the Windows installed at ``root``."""
    return find(root, "Windows", "System32", "config", name)


# --- computer name ----------------------------------------------------------------------------


def current_control_set(system_hive: Path) -> str:
    """The control set Windows boots with: Select\\Current, as "ControlSet00N"."""
    value = hive.read_value(system_hive, "Select", "Current")
    if value is None:
        raise InputError(f"{system_hive} has no Select\\Current value: not a Windows SYSTEM hive")
    return f"ControlSet{value.number():03d}"


# (key under the control set, value). ComputerName\ComputerName holds the NetBIOS name
# (upper case, as SetComputerNameEx stores it); ActiveComputerName is a volatile key that a
# running Windows rebuilds at boot (rarely present offline); Tcpip's Hostname and "NV Hostname"
# hold the DNS host name in the case given.
NAME_VALUES = (
    ("Control\\ComputerName\\ComputerName", "ComputerName"),
    ("Control\\ComputerName\\ActiveComputerName", "ComputerName"),
    ("Services\\Tcpip\\Parameters", "Hostname"),
    ("Services\\Tcpip\\Parameters", "NV Hostname"),
)
_NAME = re.compile(r"[A-Za-z0-9-]{1,15}")


def validate_computer_name(name: str) -> None:
    """One name for both the NetBIOS and the DNS host name, so at most 15 characters.

    A DNS label may hold 63, but Windows cuts the NetBIOS name to 15 (Microsoft, "Naming
    conventions in Active Directory for computers, domains, sites, and OUs"): PC-ACCOUNTING-01
    and PC-ACCOUNTING-02 would both answer as PC-ACCOUNTING-0 on the network. Rather than cut
    silently, a longer name is refused. Letters, digits and hyphens (RFC 1123 host names: no
    hyphen at either end), and not all digits (Windows refuses a numeric computer name).
    """
    if len(name) > 15:
        raise UsageError(
            f"the Windows computer name {name!r} has {len(name)} characters; a NetBIOS name"
            " holds at most 15 and Windows would cut it (two machines could end up with the"
            " same name): choose a name of 15 characters or fewer"
        )
    if not _NAME.fullmatch(name) or name.startswith("-") or name.endswith("-"):
        raise UsageError(
            f"the Windows computer name {name!r} may only hold letters, digits and hyphens,"
            " and may not begin or end with a hyphen"
        )
    if name.isdigit():
        raise UsageError(f"the Windows computer name {name!r} may not be all digits")


def computer_names(system_hive: Path) -> dict[str, str]:
    """{"ControlSet001\\...\\ComputerName\\ComputerName": "OLDPC", ...}; "" when absent."""
    control_set = current_control_set(system_hive)
    names = {}
    for key, value_name in NAME_VALUES:
        value = hive.read_value(system_hive, f"{control_set}\\{key}", value_name)
        names[f"{control_set}\\{key}\\{value_name}"] = value.text() if value else ""
    return names


def set_computer_name(system_hive: Path, name: str, where: str) -> list[Change]:
    """Give the Windows of ``system_hive`` the computer name ``name`` in its current control
    set (the others are older copies Windows keeps for recovery: left alone). UsageError for a
    bad name, InputError for a damaged or log-pending hive, both before anything is written."""
    validate_computer_name(name)
    hive.check_clean(system_hive)
    control_set = current_control_set(system_hive)
    edits: dict[str, list[Value]] = {}
    changes = []
    for key, value_name in NAME_VALUES:
        path = f"{control_set}\\{key}"
        values = hive.read_key(system_hive, path)
        if values is None:
            if value_name == "ComputerName" and "Active" not in key:
                raise InputError(f"{system_hive} has no {path} key: not a Windows SYSTEM hive")
            continue  # no TCP/IP stack, or the volatile ActiveComputerName
        new = name.upper() if value_name == "ComputerName" else name
        old = values.get(value_name.lower())
        if old is not None and old.kind == hive.REG_SZ and old.text() == new:
            continue
        edits.setdefault(path, []).append(Value.sz(value_name, new))
        before = old.text() if old else ""
        what = f"computer-name ({path}\\{value_name})"
        changes.append(Change(where, what, before, new, "read back"))
    if edits:
        hive.write_values(system_hive, edits)
    return changes


# --- sysprep state and machine SID ------------------------------------------------------------

# SOFTWARE\Microsoft\Windows\CurrentVersion\Setup\State\ImageState, documented by Microsoft
# ("Windows Setup States"): the value we trust. -> (generalized, meaning)
IMAGE_STATES = {
    "IMAGE_STATE_COMPLETE": (False, "installed and specialized"),
    "IMAGE_STATE_UNDEPLOYABLE": (False, "Windows Setup did not finish a phase"),
    "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE": (True, "sysprep /generalize ran, starts in OOBE"),
    "IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT": (True, "sysprep /generalize ran, starts in audit"),
    "IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE": (False, "specialized, starts in OOBE"),
    "IMAGE_STATE_SPECIALIZE_RESEAL_TO_AUDIT": (False, "specialized, starts in audit mode"),
}
# SYSTEM\Setup\Status\SysprepStatus\GeneralizationState is undocumented: 7 on an installed
# system, 4 after sysprep /generalize (windeploy.exe logs "Found generalization state [0x4]"
# on the first boot of a generalized image). Used only when ImageState is missing.
GENERALIZED_STATE, INSTALLED_STATE = 4, 7


@dataclass(frozen=True)
class SysprepState:
    image_state: str  # "" when the value is missing
    generalization_state: int | None

    @property
    def generalized(self) -> bool | None:
        """True, False, or None when neither value says."""
        if self.image_state in IMAGE_STATES:
            return IMAGE_STATES[self.image_state][0]
        return {GENERALIZED_STATE: True, INSTALLED_STATE: False}.get(
            self.generalization_state if self.generalization_state is not None else -1
        )

    def text(self) -> str:
        seen = []
        if self.image_state:
            meaning = IMAGE_STATES.get(self.image_state, (None, "unknown state"))[1]
            seen.append(f"ImageState {self.image_state}: {meaning}")
        if self.generalization_state is not None:
            seen.append(f"GeneralizationState {self.generalization_state}")
        how = f" ({'; '.join(seen)})" if seen else " (no setup state found)"
        word = {True: "generalized", False: "not generalized", None: "sysprep state unknown"}
        return word[self.generalized] + how


def sysprep_state(system_hive: Path, software_hive: Path | None) -> SysprepState:
    state_key = "Microsoft\\Windows\\CurrentVersion\\Setup\\State"
    image = hive.read_value(software_hive, state_key, "ImageState") if software_hive else None
    status = hive.read_value(system_hive, "Setup\\Status\\SysprepStatus", "GeneralizationState")
    return SysprepState(image.text() if image else "", status.number() if status else None)


# SAM\Domains\Account\V ends with the account domain's SID, S-1-5-21-a-b-c: revision 1, four
# sub-authorities, authority 5, then 21, a, b, c as u32 LE; the last 12 bytes are a, b, c
# (winreg-kb "Security Accounts Manager (SAM) keys"; the layout forensic tools read).
_DOMAIN_SID_HEAD = struct.pack("<BB6sI", 1, 4, b"\0\0\0\0\0\5", 21)


def machine_sid(sam_hive: Path) -> str | None:
    """The machine SID from the SAM hive, or None when its V value does not end with one."""
    value = hive.read_value(sam_hive, "SAM\\Domains\\Account", "V")
    if value is None or len(value.data) < 24 or value.data[-24:-12] != _DOMAIN_SID_HEAD:
        return None
    a, b, c = struct.unpack("<III", value.data[-12:])
    return f"S-1-5-21-{a}-{b}-{c}"


@dataclass(frozen=True)
class WindowsIdentity:
    where: str
    computer_name: str
    sysprep: SysprepState
    sid: str | None

    def facts(self) -> list[str]:
        sid = f"machine SID {self.sid}" if self.sid else "machine SID not found"
        name = f"computer name {self.computer_name}, " if self.computer_name else ""
        return [f"Windows on {self.where}: {name}{self.sysprep.text()}, {sid}"]

    def warning(self) -> str:
        """What to tell a technician who deploys this image to several machines ("" when it
        is generalized)."""
        if self.sysprep.generalized:
            return ""
        return (
            f"Windows on {self.where} is not generalized: every machine that receives this"
            f" image keeps the same machine SID ({self.sid or 'unknown'}) and the same"
            " installation ids (WSUS, management agents and domain joins can mix them up)."
            " clonebay does not rewrite the SID: Microsoft supports only Sysprep for that"
            " (KB 314828), and NewSID was retired in 2009. For many machines, run"
            " 'sysprep /generalize /oobe /shutdown' on the source and save the image again."
        )


def windows_identity(root: Path, where: str) -> WindowsIdentity:
    """Read name, sysprep state and SID of the Windows whose volume is mounted at ``root``."""
    system = config_hive(root, "SYSTEM")
    if system is None:
        raise InputError(f"{root} holds no Windows/System32/config/SYSTEM hive")
    sam = config_hive(root, "SAM")
    names = computer_names(system)
    name = next(iter(names.values()))
    state = sysprep_state(system, config_hive(root, "SOFTWARE"))
    return WindowsIdentity(where, name, state, machine_sid(sam) if sam else None)


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
