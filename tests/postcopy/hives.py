"""Real registry hive files for the Windows post-copy tests, built from nothing.

An empty hive is written natively: a 4096-byte regf base block (with its XOR checksum), then one
4096-byte hbin holding the root key (an nk cell), its security cell (sk) and one free cell. The
layout follows the libyal "Windows NT Registry File (REGF) format" document (sections "File
header", "Hive bin", "Named key", "Security key"): hivex (the oracle) opens what it describes.
Keys and values are then merged in by hivexregedit from regedit text, so every structure beyond
the empty root is written by hivex itself, as it would be in a hive Windows wrote.

The factories give the key layout of the real hives (SYSTEM, SOFTWARE, SAM, BCD) with only the
keys and values the post-copy pass reads or writes, plus neighbours it must leave alone.
"""

from __future__ import annotations

import struct
import subprocess
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from clonebay.engine.postcopy import hive

HBIN_SIZE = 4096
# base block: signature, primary and secondary sequence, FILETIME, major, minor, type, format,
# root cell offset, hive bins data size, clustering factor (libyal REGF "File header", 0x00-0x2f)
_BASE = struct.Struct("<4sIIQIIIIIII")
_CHECKSUM_AT = 0x1FC
_FILENAME_AT = 0x30
# hbin header: signature, offset from the first hbin, size, reserved, FILETIME, spare (0x20 bytes)
_HBIN = struct.Struct("<4sII8sQI")
# nk cell body after its size: signature, flags, FILETIME, access bits, parent, subkeys, volatile
# subkeys, subkey list, volatile subkey list, values, value list, security (sk), class name,
# largest subkey name, largest subkey class, largest value name, largest value data, workvar,
# key name size, class name size (0x4c bytes, then the name)
_NK = struct.Struct("<2sHQIIIIIIIIIIIIIIIHH")
_SK = struct.Struct("<2sHIIII")  # signature, reserved, flink, blink, reference count, SD size
NONE = 0xFFFFFFFF
KEY_HIVE_ENTRY, KEY_NO_DELETE, KEY_COMP_NAME = 0x04, 0x08, 0x20
FILETIME = 133_000_000_000_000_000  # 2022-06-17, any fixed moment


def regf_checksum(header: bytes) -> int:
    """The base block checksum; hivex refuses a hive whose checksum is wrong, so it checks
    this one too."""
    return hive.checksum(header)


def _cell(body: bytes) -> bytes:
    """An allocated cell: negative size (body + 4-byte size field, rounded up to 8)."""
    size = (len(body) + 4 + 7) // 8 * 8
    return struct.pack("<i", -size) + body.ljust(size - 4, b"\0")


def _security_descriptor() -> bytes:
    """A self-relative descriptor: owner Administrators, DACL allowing Everyone full access."""
    owner = struct.pack("<BB6sII", 1, 2, b"\0\0\0\0\0\5", 32, 544)  # S-1-5-32-544
    everyone = struct.pack("<BB6sI", 1, 1, b"\0\0\0\0\0\1", 0)  # S-1-1-0
    ace = struct.pack("<BBHI", 0, 0, 8 + len(everyone), 0x000F003F) + everyone
    acl = struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace
    header_size = 20
    return (
        struct.pack("<BBHIIII", 1, 0, 0x8004, header_size, 0, 0, header_size + len(owner))
        + owner
        + acl
    )


def empty_hive(path: Path, name: str = "SYSTEM", sequence: tuple[int, int] = (1, 1)) -> Path:
    """Write a hive with an empty root key; ``sequence`` sets the primary and secondary sequence
    numbers (unequal: a hive whose transaction log was never replayed)."""
    root_name = b"ROOT"
    root_at = 0x20  # cell offsets count from the first hbin; its header takes 0x20 bytes
    root_size = len(_cell(b"\0" * (_NK.size + len(root_name))))
    sk_at = root_at + root_size
    sd = _security_descriptor()
    sk = _cell(_SK.pack(b"sk", 0, sk_at, sk_at, 1, len(sd)) + sd)
    flags = KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME
    nk_fields = (b"nk", flags, FILETIME, 0, 0, 0, 0, NONE, NONE, 0, NONE, sk_at, NONE)
    nk = _NK.pack(*nk_fields, 0, 0, 0, 0, 0, len(root_name), 0) + root_name
    cells = _cell(nk) + sk
    free = HBIN_SIZE - _HBIN.size - len(cells)
    hbin = _HBIN.pack(b"hbin", 0, HBIN_SIZE, b"\0" * 8, FILETIME, 0) + cells
    hbin += struct.pack("<i", free) + b"\0" * (free - 4)
    assert len(hbin) == HBIN_SIZE

    header = bytearray(4096)
    primary, secondary = sequence
    _BASE.pack_into(
        header, 0, b"regf", primary, secondary, FILETIME, 1, 5, 0, 1, root_at, HBIN_SIZE, 1
    )
    label = f"\\SystemRoot\\System32\\Config\\{name}".encode("utf-16-le")[-64:]
    header[_FILENAME_AT : _FILENAME_AT + len(label)] = label
    struct.pack_into("<I", header, _CHECKSUM_AT, regf_checksum(bytes(header)))
    path.write_bytes(bytes(header) + hbin)
    return path


def set_sequence(path: Path, primary: int, secondary: int) -> None:
    """Rewrite a hive's sequence numbers (and its checksum, so only the log check can object)."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, 4, primary, secondary)
    struct.pack_into("<I", data, _CHECKSUM_AT, regf_checksum(bytes(data[:4096])))
    path.write_bytes(bytes(data))


# --- regedit text ---------------------------------------------------------------------------


def reg_hex(kind: int, data: bytes) -> str:
    """A value in regedit's ``hex(N):..`` notation (``hex:`` for REG_BINARY)."""
    tag = "hex" if kind == 3 else f"hex({kind:x})"
    return f"{tag}:" + ",".join(f"{b:02x}" for b in data)


def reg_sz(text: str) -> str:
    return reg_hex(1, (text + "\0").encode("utf-16-le"))


def reg_dword(number: int) -> str:
    return f"dword:{number:08x}"


def reg_name(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Key:
    path: str  # inside the hive, no prefix: "ControlSet001\\Control"
    values: dict[str, str]  # name -> regedit value text ("dword:..", "hex:..")


def merge(hive: Path, prefix: str, keys: Iterable[Key]) -> None:
    """Merge keys into the hive with hivexregedit (each parent key is named before its child:
    hivexregedit creates one level at a time)."""
    lines = ["Windows Registry Editor Version 5.00", ""]
    named: set[str] = set()
    for key in keys:
        parts = key.path.split("\\")
        for depth in range(1, len(parts)):
            parent = "\\".join(parts[:depth])
            if parent.lower() not in named:
                named.add(parent.lower())
                lines += [f"[{prefix}\\{parent}]", ""]
        named.add(key.path.lower())
        lines.append(f"[{prefix}\\{key.path}]")
        lines += [f"{reg_name(name)}={value}" for name, value in key.values.items()]
        lines.append("")
    subprocess.run(
        ["hivexregedit", "--merge", "--prefix", prefix, str(hive)],
        input="\n".join(lines).encode(),
        check=True,
        capture_output=True,
    )


# --- the four hives ---------------------------------------------------------------------------

SYSTEM_PREFIX = "HKEY_LOCAL_MACHINE\\SYSTEM"
DATABASE_PATH = "%SystemRoot%\\System32\\drivers\\etc\0".encode("utf-16-le")  # a REG_EXPAND_SZ


def mounted_device(signature: int, offset: int) -> bytes:
    """A MountedDevices value for an MBR partition: disk signature, partition byte offset."""
    return struct.pack("<IQ", signature, offset)


def gpt_mounted_device(partition: uuid.UUID) -> bytes:
    """A MountedDevices value for a GPT partition: "DMIO:ID:" and the partition GUID."""
    return b"DMIO:ID:" + partition.bytes_le


def system_hive(
    path: Path,
    *,
    computer_name: str = "OLDPC",
    generalization_state: int | None = 7,
    mounted: dict[str, bytes] | None = None,
    current: int = 1,
) -> Path:
    """A SYSTEM hive: Select, ControlSet001 (current) and ControlSet002 (the last known good
    copy, which must stay untouched), MountedDevices, Setup\\Status\\SysprepStatus."""
    empty_hive(path, "SYSTEM")
    keys = [
        Key(
            "Select",
            {
                n: reg_dword(v)
                for n, v in (
                    ("Current", current),
                    ("Default", current),
                    ("Failed", 0),
                    ("LastKnownGood", 2),
                )
            },
        ),
        Key("Setup", {"SetupType": reg_dword(0), "SystemSetupInProgress": reg_dword(0)}),
    ]
    for number in (1, 2):
        cs = f"ControlSet{number:03d}"
        name = computer_name if number == current else f"{computer_name}-LKG"
        keys += [
            Key(f"{cs}\\Control\\ComputerName\\ComputerName", {"ComputerName": reg_sz(name)}),
            Key(f"{cs}\\Control\\ComputerName\\ActiveComputerName", {"ComputerName": reg_sz(name)}),
            Key(
                f"{cs}\\Services\\Tcpip\\Parameters",
                {
                    "Hostname": reg_sz(name.lower()),
                    "NV Hostname": reg_sz(name.lower()),
                    "Domain": reg_sz(""),
                    "SearchList": reg_sz(""),
                    "DataBasePath": reg_hex(2, DATABASE_PATH),
                },
            ),
            Key(f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces", {}),
        ]
    if generalization_state is not None:
        keys.append(
            Key(
                "Setup\\Status\\SysprepStatus",
                {
                    "GeneralizationState": reg_dword(generalization_state),
                    "CleanupState": reg_dword(2),
                },
            )
        )
    if mounted:
        keys.append(Key("MountedDevices", {n: reg_hex(3, d) for n, d in mounted.items()}))
    merge(path, SYSTEM_PREFIX, keys)
    return path


def software_hive(path: Path, image_state: str | None = "IMAGE_STATE_COMPLETE") -> Path:
    empty_hive(path, "SOFTWARE")
    state = "Microsoft\\Windows\\CurrentVersion\\Setup\\State"
    keys = [Key("Microsoft\\Windows NT\\CurrentVersion", {"ProductName": reg_sz("Windows 10 Pro")})]
    if image_state is not None:
        keys.append(Key(state, {"ImageState": reg_sz(image_state)}))
    merge(path, "HKEY_LOCAL_MACHINE\\SOFTWARE", keys)
    return path


def domain_sid(a: int, b: int, c: int) -> bytes:
    """The binary SID S-1-5-21-a-b-c: revision 1, 4 sub-authorities, authority 5, 21, a, b, c."""
    return struct.pack("<BB6sIIII", 1, 4, b"\0\0\0\0\0\5", 21, a, b, c)


def sam_hive(path: Path, sid: tuple[int, int, int]) -> Path:
    """A SAM hive whose SAM\\Domains\\Account\\V ends with the machine's domain SID, as on
    Windows (the V value holds a security descriptor first; here 0x40 bytes stand in for it)."""
    empty_hive(path, "SAM")
    v = bytes(range(0x40)) + domain_sid(*sid)
    keys = [
        Key("SAM\\Domains\\Account", {"F": reg_hex(3, bytes(0x50)), "V": reg_hex(3, v)}),
        Key("SAM\\Domains\\Account\\Users\\000001F4", {"F": reg_hex(3, b"\0" * 0x50)}),
        Key("SAM\\Domains\\Builtin", {"V": reg_hex(3, b"\0" * 0x20)}),
    ]
    merge(path, "HKEY_LOCAL_MACHINE\\SAM", keys)
    return path


# BCD object types (bcdedit's /enum shows them; Microsoft's BCD WMI docs list the codes)
BOOTMGR_TYPE = 0x10100002  # Windows Boot Manager
OSLOADER_TYPE = 0x10200003  # Windows Boot Loader
BOOTMGR_ID = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"


def bcd_mbr_device(signature: int, offset: int) -> bytes:
    """A BCD device element for a partition of an MBR disk, built from the mistyprojects example
    (docs BCDEdit/files/device_partition.htm): 16 zero bytes, type 6, size 0x48, offset at 0x20,
    style 1 at 0x34, signature at 0x38; 0x58 bytes in all."""
    data = bytearray(0x58)
    struct.pack_into("<I", data, 0x10, 6)
    struct.pack_into("<I", data, 0x18, 0x48)
    struct.pack_into("<Q", data, 0x20, offset)
    struct.pack_into("<I", data, 0x34, 1)
    struct.pack_into("<I", data, 0x38, signature)
    return bytes(data)


def bcd_gpt_device(partition: uuid.UUID, disk: uuid.UUID) -> bytes:
    data = bytearray(0x58)
    struct.pack_into("<I", data, 0x10, 6)
    struct.pack_into("<I", data, 0x18, 0x48)
    data[0x20:0x30] = partition.bytes_le
    data[0x38:0x48] = disk.bytes_le
    return bytes(data)


@dataclass
class BcdObject:
    guid: str  # "{...}"
    kind: int  # Description\Type
    elements: dict[str, bytes | str]  # "11000001" -> device bytes, "12000004" -> description


def bcd_hive(path: Path, objects: list[BcdObject]) -> Path:
    """A BCD store: Description (KeyName BCD00000000), Objects\\{GUID}\\Description\\Type and
    Objects\\{GUID}\\Elements\\{element}\\Element, as bcdedit writes it."""
    empty_hive(path, "BCD")
    keys = [Key("Description", {"KeyName": reg_sz("BCD00000000"), "System": reg_dword(1)})]
    for obj in objects:
        base = f"Objects\\{obj.guid}"
        keys.append(Key(f"{base}\\Description", {"Type": reg_dword(obj.kind)}))
        for element, value in obj.elements.items():
            text = reg_sz(value) if isinstance(value, str) else reg_hex(3, value)
            keys.append(Key(f"{base}\\Elements\\{element}", {"Element": text}))
    merge(path, "HKEY_LOCAL_MACHINE\\BCD00000000", keys)
    return path
