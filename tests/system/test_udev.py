"""Listing disks: pure sysfs/udev helpers on captured values, then a real loop disk (root).

The root tests attach a partitioned image with losetup, check what list_disks() says about it
against what we built and against lsblk (which reads the same sysfs independently), mount one
partition and see it become busy, and check that the disk holding "/" is marked. They detach
and unmount only what they set up themselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.model import Disk
from clonebay.system.run import output, run
from clonebay.system.udev import (
    decode_udev_string,
    find_disk,
    is_listed,
    is_live_medium,
    list_disks,
    natural_key,
    normalize_wwid,
    parse_sysfs_flag,
    parse_sysfs_int,
    partition_paths,
    serial_from_vpd_pg80,
    transport,
    transport_from_sysfs,
    transport_from_udev,
)

MiB = 1024 * 1024
IMAGE_SIZE = 64 * MiB
FIRST_PARTITION = 16 * MiB

# --- pure helpers, on values captured from real machines --------------------------------------

# udev properties of real disks (udevadm info --query=property), trimmed to what we read.
UDEV_SATA = {"ID_BUS": "ata", "ID_PATH": "pci-0000:00:17.0-ata-1.0", "ID_ATA": "1"}
UDEV_USB = {
    "ID_BUS": "usb",
    "ID_USB_DRIVER": "usb-storage",
    "ID_PATH": "pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0",
}
UDEV_UAS_SATA_BRIDGE = {"ID_BUS": "ata", "ID_PATH": "pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0"}
UDEV_NVME = {"ID_PATH": "pci-0000:01:00.0-nvme-1", "ID_MODEL": "Samsung SSD 970 EVO Plus 1TB"}
UDEV_FIREWIRE = {"ID_BUS": "ieee1394", "ID_PATH": "pci-0000:05:00.0-ieee1394-0x0001d202e0033ef1"}
UDEV_SAS = {"ID_BUS": "scsi", "ID_PATH": "pci-0000:03:00.0-sas-0x5000c500a1b2c3d4-lun-0"}
UDEV_VIRTIO = {"ID_PATH": "pci-0000:00:05.0"}

# sysfs paths (readlink -f /sys/block/X) of the same kinds of disks.
SYS_SATA = "/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda"
SYS_USB = (
    "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host6/target6:0:0/6:0:0:0/block/sdb"
)
SYS_FIREWIRE = (
    "/sys/devices/pci0000:00/0000:00:1c.4/0000:05:00.0/fw1/fw1.0/host7/target7:0:0/"
    "7:0:0:0/block/sdc"
)
SYS_VIRTIO_SCSI = "/sys/devices/pci0000:00/0000:00:04.0/virtio2/host0/target0:0:0/0:0:0:0/block/sda"
SYS_NVME = "/sys/devices/pci0000:00/0000:00:1d.0/0000:01:00.0/nvme/nvme0/nvme0n1"
SYS_VIRTIO = "/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda"
SYS_MMC = "/sys/devices/platform/fe320000.mmc/mmc_host/mmc1/mmc1:aaaa/block/mmcblk0"
SYS_LOOP = "/sys/devices/virtual/block/loop3"
SYS_USB_OPTICAL = (
    "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host8/target8:0:0/8:0:0:0/block/sr0"
)


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        (UDEV_SATA, "sata"),
        (UDEV_USB, "usb"),
        (UDEV_UAS_SATA_BRIDGE, "usb"),
        (UDEV_NVME, "nvme"),
        (UDEV_FIREWIRE, "firewire"),
        (UDEV_SAS, "scsi"),
        (UDEV_VIRTIO, ""),  # no bus token: left to sysfs
        ({}, ""),
    ],
)
def test_transport_from_udev(properties: dict[str, str], expected: str) -> None:
    assert transport_from_udev(properties) == expected


@pytest.mark.parametrize(
    ("name", "sys_path", "expected"),
    [
        ("sda", SYS_SATA, "sata"),
        ("sdb", SYS_USB, "usb"),
        ("sdc", SYS_FIREWIRE, "firewire"),
        ("sda", SYS_VIRTIO_SCSI, "scsi"),
        ("nvme0n1", SYS_NVME, "nvme"),
        ("vda", SYS_VIRTIO, "virtio"),
        ("mmcblk0", SYS_MMC, "mmc"),
        ("loop3", SYS_LOOP, "loop"),
        ("sr0", SYS_USB_OPTICAL, "usb"),
        ("xvda", "/sys/devices/vbd-51712/block/xvda", ""),
    ],
)
def test_transport_from_sysfs(name: str, sys_path: str, expected: str) -> None:
    assert transport_from_sysfs(name, sys_path) == expected


def test_transport_prefers_udev_then_sysfs() -> None:
    assert transport("vda", SYS_VIRTIO, UDEV_VIRTIO) == "virtio"
    assert transport("sda", SYS_SATA, {}) == "sata"
    assert transport("sdb", SYS_USB, UDEV_UAS_SATA_BRIDGE) == "usb"
    assert transport("loop0", SYS_LOOP, {"ID_PATH": "pci-0000:00:17.0-ata-1"}) == "loop"


def test_sysfs_values() -> None:
    assert parse_sysfs_int("536870912\n") == 536870912
    assert parse_sysfs_int(None, 512) == 512
    assert parse_sysfs_int("garbage", 512) == 512
    assert parse_sysfs_flag("1\n") is True
    assert parse_sysfs_flag("0\n") is False
    assert parse_sysfs_flag(None) is False


def test_natural_order() -> None:
    names = ["sda10", "sdb", "sda2", "sda1", "nvme0n1p10", "nvme0n1p9", "loop10", "loop2"]
    assert sorted(names, key=natural_key) == [
        "loop2",
        "loop10",
        "nvme0n1p9",
        "nvme0n1p10",
        "sda1",
        "sda2",
        "sda10",
        "sdb",
    ]


def test_udev_model_encoding() -> None:
    assert decode_udev_string("ST2000DM008-2FR1\\x20\\x20\\x20\\x20") == "ST2000DM008-2FR1"
    assert decode_udev_string("Cruzer\\x20Blade\\x20\\x20") == "Cruzer Blade"


def test_wwid_normalized_like_udev() -> None:
    assert normalize_wwid("naa.5000C500A1B2C3D4\n") == "0x5000c500a1b2c3d4"
    assert normalize_wwid("t10.ATA     ST2000DM008-2FR102                      ZFL0ABCD") == ""
    assert normalize_wwid("eui.0025385b71b0a1c2\n") == "eui.0025385b71b0a1c2"
    assert normalize_wwid("") == ""


def test_vpd_unit_serial_page() -> None:
    # sg_vpd --page=0x80 --raw of a SATA disk behind libata's SCSI translation
    serial_field = b"     WD-WCC4N1234567"  # ATA IDENTIFY words 10-19: 20 bytes, left-padded
    assert len(serial_field) == 0x14
    page = bytes([0x00, 0x80, 0x00, 0x14]) + serial_field
    assert serial_from_vpd_pg80(page) == "WD-WCC4N1234567"
    assert serial_from_vpd_pg80(b"") == ""
    assert serial_from_vpd_pg80(bytes([0, 0x83, 0, 4]) + b"abcd") == ""  # another page
    assert serial_from_vpd_pg80(bytes([0, 0x80, 0, 40]) + b"short") == ""  # length overruns
    assert serial_from_vpd_pg80(bytes([0, 0x80, 0, 3]) + b"a\x01b") == ""  # not ASCII text


@pytest.mark.parametrize(
    ("name", "sectors", "hidden", "backing", "expected"),
    [
        ("sda", 1000, False, None, True),
        ("sr0", 0, False, None, False),  # optical drive without a disc
        ("sr0", 1_400_000, False, None, True),  # with a disc
        ("loop0", 0, False, "", False),  # detached
        ("loop1", 131072, False, "/srv/disk.img", True),
        ("ram0", 8192, False, None, False),
        ("zram0", 8192, False, None, False),
        ("dm-0", 8192, False, None, False),
        ("md127", 8192, False, None, False),
        ("mmcblk0", 8192, False, None, True),
        ("mmcblk0boot0", 8192, False, None, False),  # eMMC firmware area
        ("nvme0c0n1", 8192, True, None, False),  # multipath path device
    ],
)
def test_which_devices_are_listed(
    name: str, sectors: int, hidden: bool, backing: str | None, expected: bool
) -> None:
    assert is_listed(name, sectors, hidden, backing) is expected


def test_live_medium_rule() -> None:
    assert is_live_medium(["/"])
    assert is_live_medium(["/boot", "/run/live/medium"])
    assert is_live_medium(["/usr/lib/live/mount/medium"])
    assert is_live_medium(["/run/live/persistence/sdb2"])
    assert is_live_medium([], "/run/live/medium/live/filesystem.squashfs")
    assert not is_live_medium(["/mnt/run/live/medium", "/home"])
    assert not is_live_medium([], "/run/live/medium2/x.img")
    assert not is_live_medium([])


# --- a real loop disk ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoopDisk:
    image: Path
    device: str  # /dev/loopN

    @property
    def name(self) -> str:
        return os.path.basename(self.device)

    def part(self, number: int) -> str:
        return f"{self.device}p{number}"


def _by_path(disks: list[Disk], path: str) -> Disk:
    matches = [d for d in disks if d.path == path]
    assert len(matches) == 1, f"{path} listed {len(matches)} times in {[d.path for d in disks]}"
    return matches[0]


@pytest.fixture(scope="module")
def loop_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopDisk]:
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices")
    image = tmp_path_factory.mktemp("udev") / "disk.img"
    with image.open("wb") as handle:
        handle.truncate(IMAGE_SIZE)
    layout = f"label: gpt\nsize={FIRST_PARTITION // 512}, type=linux\ntype=linux\n"
    run(["sfdisk", "--quiet", str(image)], input_bytes=layout.encode())
    device = output(["losetup", "--find", "--show", str(image)]).strip()
    try:
        run(["partx", "-a", device])
        try:
            disk = LoopDisk(image, device)
            run(["mkfs.ext4", "-q", "-F", disk.part(2)])
            yield disk
        finally:
            # Partitions added with partx outlive `losetup -d` (the kernel drops them on detach
            # only for loop devices attached with --partscan): remove them first.
            run(["partx", "-d", device])
    finally:
        run(["losetup", "-d", device])


@pytest.fixture
def mounted(loop_disk: LoopDisk, tmp_path: Path) -> Iterator[str]:
    """Partition 2 mounted at a folder whose name needs mountinfo's escapes."""
    mountpoint = tmp_path / "mount point\twith tab"
    mountpoint.mkdir()
    run(["mount", "-t", "ext4", loop_disk.part(2), str(mountpoint)])
    try:
        yield str(mountpoint)
    finally:
        run(["umount", str(mountpoint)])


def _lsblk(device: str) -> dict[str, object]:
    columns = "NAME,SIZE,RO,RM,ROTA,LOG-SEC,PHY-SEC,MOUNTPOINTS"
    text = output(["lsblk", "--json", "--bytes", "--output", columns, device])
    tree = json.loads(text)["blockdevices"][0]
    assert isinstance(tree, dict)
    return tree


def _check_against_lsblk(disk: Disk) -> None:
    tree = _lsblk(disk.path)
    children = tree.get("children", [])
    assert isinstance(children, list)
    assert disk.size == tree["size"]
    assert disk.read_only == tree["ro"]
    assert disk.removable == tree["rm"]
    assert disk.rotational == tree["rota"]
    assert disk.logical_sector_size == tree["log-sec"]
    assert disk.physical_sector_size == tree["phy-sec"]
    assert list(disk.partitions) == [c["name"] for c in children]
    points = [p for node in [tree, *children] for p in node["mountpoints"] if p]
    assert sorted(disk.mountpoints) == sorted(points)


@pytest.mark.root
def test_loop_disk_is_listed_as_built(loop_disk: LoopDisk) -> None:
    disk = _by_path(list_disks(), loop_disk.device)
    assert disk.size == IMAGE_SIZE
    assert disk.transport == "loop"
    assert disk.model == f"loop: {loop_disk.image}"
    assert disk.partitions == (f"{loop_disk.name}p1", f"{loop_disk.name}p2")
    assert disk.mountpoints == ()
    assert disk.holders == ()
    assert not disk.in_use
    assert not disk.is_live_medium
    assert not disk.read_only
    _check_against_lsblk(disk)


@pytest.mark.root
def test_mounted_partition_makes_the_disk_busy(loop_disk: LoopDisk, mounted: str) -> None:
    disk = _by_path(list_disks(), loop_disk.device)
    assert disk.mountpoints == (mounted,)
    assert disk.in_use
    assert not disk.is_live_medium
    _check_against_lsblk(disk)
    found = find_disk(loop_disk.part(2))
    assert found is not None
    assert found.mountpoints == (mounted,)


@pytest.mark.root
def test_find_disk_resolves_links_and_partitions(loop_disk: LoopDisk, tmp_path: Path) -> None:
    link = tmp_path / "by-id-like-link"
    link.symlink_to(loop_disk.part(1))
    for path in (loop_disk.device, loop_disk.part(1), loop_disk.part(2), str(link)):
        found = find_disk(path)
        assert found is not None, path
        assert found.path == loop_disk.device
        assert found.partitions == (f"{loop_disk.name}p1", f"{loop_disk.name}p2")
    assert find_disk(str(loop_disk.image)) is None  # an image file is not a block device
    assert find_disk(str(tmp_path / "missing")) is None


@pytest.mark.root
def test_partition_paths_are_the_nodes(loop_disk: LoopDisk) -> None:
    disk = find_disk(loop_disk.device)
    assert disk is not None
    paths = partition_paths(disk)
    assert paths == [loop_disk.part(1), loop_disk.part(2)]
    sizes = [int(output(["blockdev", "--getsize64", p])) for p in paths]
    assert sizes[0] == FIRST_PARTITION
    assert sum(sizes) < IMAGE_SIZE


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="reads root-only sysfs attributes")
def test_disk_holding_root_is_marked() -> None:
    st_dev = os.stat("/").st_dev
    major, minor = os.major(st_dev), os.minor(st_dev)
    if major == 0:
        pytest.skip("/ is not on a block device here (overlay, tmpfs or btrfs)")
    node = Path(os.path.realpath(f"/sys/dev/block/{major}:{minor}"))
    whole = node.parent if (node / "partition").exists() else node
    disk = _by_path(list_disks(), f"/dev/{whole.name}")
    assert disk.is_live_medium
    assert disk.in_use
    assert "/" in disk.mountpoints
    _check_against_lsblk(disk)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="reads root-only sysfs attributes")
def test_detached_loops_and_memory_disks_are_not_listed() -> None:
    listed = {os.path.basename(d.path) for d in list_disks()}
    for entry in Path("/sys/block").iterdir():
        backing = entry / "loop" / "backing_file"
        if entry.name.startswith("loop") and not backing.exists():
            assert entry.name not in listed
        if entry.name.startswith(("ram", "zram")):
            assert entry.name not in listed
