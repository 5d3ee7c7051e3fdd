"""The machine's disks, as pyudev and sysfs see them, converted into clonebay.model.Disk.

pyudev enumerates the block devices (subsystem "block", DEVTYPE "disk") and their partitions;
everything else is read from sysfs, because the live system may run without a udev daemon (and
so without the udev database that holds ID_MODEL, ID_SERIAL_SHORT, ID_BUS...). When those
properties are present they win; otherwise the same facts come from sysfs: device/model,
device/serial, virtio's block/X/serial, the SCSI unit serial VPD page, wwid, and the device's
place in the sysfs tree for the transport (a USB disk sits under .../usbN/..., a SATA disk under
.../ataN/..., a FireWire disk under .../fwN/...).

Which devices are disks: every whole block device except
  - ram*, zram* (memory), dm-* and md* (volumes stacked on disks: they show as the disks'
    holders, and a copy works on the disks underneath),
  - hidden devices (NVMe multipath paths; they have no /dev node), and eMMC boot and RPMB
    areas (mmcblk0boot0: small firmware areas, read-only by default, not the user's disk),
  - loop devices with no backing file, and any device of size 0 (an optical or card-reader
    drive without a medium, an unconfigured nbd). Optical drives with a medium are kept.

What makes a disk busy: its mount points (of the disk, its partitions, and of the devices
stacked on them: dm/md followed through holders, and loop devices over any of them, as
system/devgraph.py sees them) and its direct holders.

The live-medium rule: a disk is marked ``is_live_medium`` when it, a partition of it or a
device stacked on it is mounted at "/" (it backs the running system: an installed OS, or a
live system not copied to RAM) or at a live-boot medium mount (/run/live/medium,
/lib/live/mount/medium, /run/live/persistence/...); a loop device whose backing file lies under
such a medium mount (the live system's squashfs) is marked too.

Only this module imports pyudev; no pyudev object leaves it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyudev

from clonebay.errors import InputError
from clonebay.model import Disk
from clonebay.system.devgraph import Graph, blk, upper
from clonebay.system.mounts import DevNum, MountTable, block_devnum, parse_devnum, read_mount_table

SYS_CLASS_BLOCK = Path("/sys/class/block")
BY_ID_DIR = Path("/dev/disk/by-id")
LIVE_MEDIUM_MOUNTS = ("/run/live/medium", "/lib/live/mount/medium", "/usr/lib/live/mount/medium")
LIVE_PERSISTENCE_PREFIX = "/run/live/persistence/"
SYSTEM_ROOT = "/"
SECTOR = 512  # sysfs "size" counts 512-byte units whatever the logical sector size
_SKIPPED_PREFIXES = ("ram", "zram", "dm-", "md")
_UDEV_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_FIREWIRE_NODE = re.compile(r"/fw\d+(\.\d+)?/")
_ATA_PORT = re.compile(r"/ata\d+/")
_EMMC_AREA = re.compile(r"mmcblk\d+(boot\d+|rpmb)")
_TRANSPORT_TOKENS = (  # udev ID_BUS / ID_PATH tokens, most specific first: a USB bridge shows
    ("usb", "usb"),  # "usb" and "scsi", and may report ID_BUS=ata
    ("ieee1394", "firewire"),
    ("nvme", "nvme"),
    ("virtio", "virtio"),
    ("mmc", "mmc"),
    ("ata", "sata"),
    ("sas", "scsi"),
    ("scsi", "scsi"),
)


# --- pure helpers: sysfs and udev values -> our values --------------------------------------


def parse_sysfs_int(text: str | None, default: int = 0) -> int:
    """A sysfs number ("1\\n"); ``default`` when absent or not a decimal number."""
    if text is None:
        return default
    value = text.strip()
    return int(value) if value.isdigit() else default


def parse_sysfs_flag(text: str | None) -> bool:
    """A sysfs 0/1 attribute (removable, ro, queue/rotational)."""
    return parse_sysfs_int(text) != 0


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that orders sda2 before sda10 and loop0p2 before loop0p10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def decode_udev_string(text: str) -> str:
    """Decode udev's ``\\x20`` escapes (ID_MODEL_ENC) and trim the padding."""
    return _UDEV_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text).strip()


def normalize_wwid(text: str) -> str:
    """A sysfs wwid in the form udev gives ID_WWN: "naa.5000c500a1b2" -> "0x5000c500a1b2".

    A "t10." id is the vendor, model and serial glued together, not a world wide name: "".
    EUI-64 and NVMe ids are kept as they are.
    """
    value = text.strip()
    if value.startswith("naa."):
        return "0x" + value[4:].lower()
    if value.startswith("t10."):
        return ""
    return value


def serial_from_vpd_pg80(data: bytes) -> str:
    """Serial number from a SCSI Unit Serial Number VPD page (SPC-4 7.8.15).

    Layout: byte 1 page code 0x80, bytes 2-3 page length (big endian), then that many ASCII
    bytes, space-padded. Anything else gives "" (serial unknown), never a guess.
    """
    if len(data) < 4 or data[1] != 0x80:
        return ""
    length = int.from_bytes(data[2:4], "big")
    if 4 + length > len(data):
        return ""
    raw = data[4 : 4 + length]
    if any(b < 0x20 or b > 0x7E for b in raw.rstrip(b"\0")):
        return ""
    return raw.rstrip(b"\0").decode("ascii").strip()


def transport_from_udev(properties: Mapping[str, str]) -> str:
    """Transport from udev's ID_BUS and ID_PATH ("pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0")."""
    tokens = set(properties.get("ID_PATH", "").split("-"))
    tokens.add(properties.get("ID_BUS", "").lower())
    if properties.get("ID_USB_DRIVER"):
        tokens.add("usb")
    return next((kind for token, kind in _TRANSPORT_TOKENS if token in tokens), "")


def transport_from_sysfs(name: str, sys_path: str) -> str:
    """Transport from the kernel name and where the device sits in /sys/devices."""
    if name.startswith("loop"):
        return "loop"
    if "/usb" in sys_path:
        return "usb"
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("vd"):
        return "virtio"
    if name.startswith("mmcblk"):
        return "mmc"
    if _FIREWIRE_NODE.search(sys_path):
        return "firewire"
    if _ATA_PORT.search(sys_path):
        return "sata"
    if name.startswith(("sd", "sr")):
        return "scsi"
    return ""


def transport(name: str, sys_path: str, properties: Mapping[str, str]) -> str:
    """udev's answer when it has one, else sysfs's; a loop device is always "loop"."""
    if name.startswith("loop"):
        return "loop"
    return transport_from_udev(properties) or transport_from_sysfs(name, sys_path)


def loop_description(backing_file: str) -> str:
    """The model-like text shown for a loop device: "loop: /path/to/image"."""
    return f"loop: {backing_file}"


def is_listed(name: str, sectors: int, hidden: bool, backing_file: str | None) -> bool:
    """Whether a whole block device is a disk clonebay offers (see the module docstring)."""
    if name.startswith(_SKIPPED_PREFIXES) or _EMMC_AREA.fullmatch(name) or hidden or sectors <= 0:
        return False
    return not (name.startswith("loop") and not backing_file)


def is_live_medium(mountpoints: Iterable[str], backing_file: str = "") -> bool:
    """The live-medium rule of the module docstring, on a disk's (stacked) mount points."""
    for point in mountpoints:
        if point == SYSTEM_ROOT or point in LIVE_MEDIUM_MOUNTS:
            return True
        if point.startswith(LIVE_PERSISTENCE_PREFIX):
            return True
    return any(backing_file.startswith(m + "/") for m in LIVE_MEDIUM_MOUNTS)


# --- reading sysfs ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read_stripped(path: Path) -> str:
    return (_read(path) or "").strip()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _devnum(sys_dir: Path) -> DevNum | None:
    text = _read(sys_dir / "dev")
    if text is None:
        return None
    try:
        return parse_devnum(text)
    except InputError:
        return None


def _holder_names(sys_dir: Path) -> list[str]:
    try:
        return sorted((entry.name for entry in (sys_dir / "holders").iterdir()), key=natural_key)
    except OSError:
        return []


def _stacked_mountpoints(graph: Graph, devnums: Iterable[DevNum], mounts: MountTable) -> list[str]:
    """Mount points of the devices stacked on a disk and its partitions: holders of holders
    (dm, md) and loop devices over any of them (system/devgraph.py)."""
    stacked = upper(graph, {blk(devnum) for devnum in devnums})
    return [point for ident in sorted(stacked) for point in mounts.mountpoints(ident[1:])]


def _backing_file(name: str, sys_dir: Path) -> str | None:
    """A loop device's backing file ("" when detached); None for other devices."""
    if not name.startswith("loop"):
        return None
    return _read_stripped(sys_dir / "loop" / "backing_file")


def _model(sys_dir: Path, properties: Mapping[str, str], backing_file: str | None) -> str:
    if backing_file:
        return loop_description(backing_file)
    if properties.get("ID_MODEL_ENC"):
        return decode_udev_string(properties["ID_MODEL_ENC"])
    if properties.get("ID_MODEL"):
        return properties["ID_MODEL"].strip()
    return _read_stripped(sys_dir / "device" / "model") or _read_stripped(
        sys_dir / "device" / "name"  # MMC/SD cards
    )


def _serial(sys_dir: Path, properties: Mapping[str, str]) -> str:
    if properties.get("ID_SERIAL_SHORT"):
        return properties["ID_SERIAL_SHORT"].strip()
    return (
        _read_stripped(sys_dir / "device" / "serial")  # NVMe controller, MMC card
        or _read_stripped(sys_dir / "serial")  # virtio-blk
        or serial_from_vpd_pg80(_read_bytes(sys_dir / "device" / "vpd_pg80"))  # SCSI, SATA
    )


def _wwn(sys_dir: Path, properties: Mapping[str, str]) -> str:
    if properties.get("ID_WWN"):
        return properties["ID_WWN"].strip()
    wwid = _read_stripped(sys_dir / "wwid") or _read_stripped(sys_dir / "device" / "wwid")
    return normalize_wwid(wwid)


def _by_id_links() -> dict[str, list[str]]:
    """/dev/disk/by-id links grouped by the device node they point at."""
    links: dict[str, list[str]] = {}
    try:
        entries = sorted(BY_ID_DIR.iterdir())
    except OSError:
        return links
    for entry in entries:
        links.setdefault(os.path.realpath(entry), []).append(str(entry))
    return links


# --- pyudev -> Disk ----------------------------------------------------------------------------


def _partitions(device: pyudev.Device) -> list[tuple[str, Path]]:
    """(kernel name, sysfs dir) of a disk's partitions, in natural order."""
    found = [
        (child.sys_name, Path(child.sys_path))
        for child in device.children
        if child.subsystem == "block" and child.device_type == "partition"
    ]
    return sorted(found, key=lambda item: natural_key(item[0]))


def kernel_name_to_node(name: str) -> str:
    """The /dev node the kernel (devtmpfs) creates for a block device name ("cciss!c0d0p1")."""
    return "/dev/" + name.replace("!", "/")


def _node(device: pyudev.Device) -> str:
    return str(device.device_node or kernel_name_to_node(str(device.sys_name)))


def _to_disk(
    device: pyudev.Device, mounts: MountTable, by_id: Mapping[str, list[str]], graph: Graph
) -> Disk:
    name = str(device.sys_name)
    sys_dir = Path(device.sys_path)
    properties = {str(k): str(v) for k, v in device.properties.items()}
    backing = _backing_file(name, sys_dir)
    parts = _partitions(device)

    holders = _holder_names(sys_dir)
    mountpoints: list[str] = []
    devnums: list[DevNum] = []
    for part_dir in [sys_dir, *(path for _, path in parts)]:
        devnum = _devnum(part_dir)
        if devnum is not None:
            mountpoints.extend(mounts.mountpoints(devnum))
            devnums.append(devnum)
        if part_dir != sys_dir:
            holders.extend(h for h in _holder_names(part_dir) if h not in holders)
    mountpoints.extend(_stacked_mountpoints(graph, devnums, mounts))
    mountpoints = list(dict.fromkeys(mountpoints))

    node = _node(device)
    queue = sys_dir / "queue"
    return Disk(
        path=node,
        size=parse_sysfs_int(_read(sys_dir / "size")) * SECTOR,
        model=_model(sys_dir, properties, backing),
        serial=_serial(sys_dir, properties),
        wwn=_wwn(sys_dir, properties),
        transport=transport(name, str(sys_dir), properties),
        removable=parse_sysfs_flag(_read(sys_dir / "removable")),
        read_only=parse_sysfs_flag(_read(sys_dir / "ro")),
        rotational=parse_sysfs_flag(_read(queue / "rotational")),
        logical_sector_size=parse_sysfs_int(_read(queue / "logical_block_size"), 512),
        physical_sector_size=parse_sysfs_int(_read(queue / "physical_block_size"), 512),
        partitions=tuple(part for part, _ in parts),
        mountpoints=tuple(mountpoints),
        holders=tuple(holders),
        is_live_medium=is_live_medium(mountpoints, backing or ""),
        by_id=tuple(by_id.get(node, ())),
    )


def _listed(device: pyudev.Device) -> bool:
    name = str(device.sys_name)
    sys_dir = Path(device.sys_path)
    return is_listed(
        name,
        parse_sysfs_int(_read(sys_dir / "size")),
        parse_sysfs_flag(_read(sys_dir / "hidden")),
        _backing_file(name, sys_dir),
    )


def disk_from_device(device: pyudev.Device) -> Disk | None:
    """One udev block device (e.g. from a hotplug event) as a Disk; None unless it is listed."""
    if device.subsystem != "block" or device.device_type != "disk" or not _listed(device):
        return None
    return _to_disk(device, read_mount_table(), _by_id_links(), Graph.read())


def list_disks(context: pyudev.Context | None = None) -> list[Disk]:
    """Every disk of the machine (see the module docstring for which), in natural name order."""
    if context is None:
        context = pyudev.Context()
    mounts = read_mount_table()
    by_id = _by_id_links()
    devices = context.list_devices(subsystem="block", DEVTYPE="disk")
    graph = Graph.read()
    disks = [_to_disk(d, mounts, by_id, graph) for d in devices if _listed(d)]
    return sorted(disks, key=lambda disk: natural_key(disk.path))


def find_disk(path: str, context: pyudev.Context | None = None) -> Disk | None:
    """The disk ``path`` names: a device node, a by-id (or any) symlink, or a partition of it.

    None when ``path`` is not a block device or names a device that is not listed (a detached
    loop device, a dm volume...).
    """
    devnum = block_devnum(path)
    if devnum is None:
        return None
    if context is None:
        context = pyudev.Context()
    try:
        device = pyudev.Devices.from_device_number(context, "block", os.makedev(*devnum))
    except pyudev.DeviceNotFoundError:
        return None
    if device.device_type == "partition":
        device = device.find_parent("block", "disk")
        if device is None:
            return None
    return disk_from_device(device)


def partition_paths(disk: Disk) -> list[str]:
    """Device nodes of a disk's partitions (/dev/sda1, /dev/nvme0n1p2...), in order."""
    return [kernel_name_to_node(name) for name in disk.partitions]
