"""Windows in the post-copy pass: its computer name, its sysprep state and machine SID.

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
Boot data after a move (BCD, MountedDevices, BOOTSECT copies): engine/postcopy/windows_boot.py.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from clonebay.engine.postcopy import hive
from clonebay.engine.postcopy.changes import Change
from clonebay.engine.postcopy.hive import Value
from clonebay.engine.postcopy.systems import find_ci
from clonebay.errors import InputError, UsageError


def find(root: Path, *names: str) -> Path | None:
    """``root/names...`` with each name matched case-insensitively (NTFS semantics)."""
    return find_ci(root, "/".join(names))


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
