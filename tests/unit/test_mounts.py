"""Parsing /proc/self/mountinfo and /proc/swaps, on text captured from real systems."""

from __future__ import annotations

from pathlib import Path

import pytest

from clonebay.errors import InputError
from clonebay.system.mounts import (
    SWAP_MOUNTPOINT,
    MountEntry,
    block_devnum,
    build_table,
    parse_devnum,
    parse_mountinfo,
    parse_swaps,
    unescape,
)

# Captured on this build VM (root on a whole virtio disk, no partitions).
VM_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,nr_inodes=3083623,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684092k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# Captured on a desktop: root on LVM (dm-1 = 254:1, source is a /dev/mapper alias), /boot on
# sda1 with shared-subtree optional fields, a USB stick mounted at a path with spaces and a tab,
# a btrfs volume (anonymous 0:45 device number) and a bind mount of a subfolder.
DESKTOP_MOUNTINFO = (
    "21 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw,errors=remount-ro\n"
    "30 21 8:1 / /boot rw,relatime shared:30 - ext2 /dev/sda1 rw\n"
    "95 21 8:33 / /media/tech/My\\040Stick\\011x rw,nosuid,nodev,relatime shared:52 master:7"
    " - vfat /dev/sdc1 rw,fmask=0022,codepage=437,iocharset=ascii,errors=remount-ro\n"
    "97 21 0:45 / /srv/data rw,relatime shared:54 - btrfs /dev/sdb2 rw,space_cache=v2\n"
    "98 21 0:45 /snap /srv/snap rw,relatime shared:54 - btrfs /dev/sdb2 rw,space_cache=v2\n"
    "99 21 8:1 /grub /mnt/back\\134slash rw,relatime shared:30 - ext2 /dev/sda1 rw\n"
)

SWAPS = """\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/sda3                               partition\t8388604\t\t0\t\t-2
/swap\\040file                           file\t\t1048572\t\t0\t\t-3
"""


def test_vm_sample_parses_every_line() -> None:
    entries = parse_mountinfo(VM_MOUNTINFO)
    assert len(entries) == 8
    root = entries[5]
    assert root == MountEntry(27, 1, 254, 0, "/", "/", "ext4", "/dev/vda")


def test_escapes_and_optional_fields() -> None:
    entries = parse_mountinfo(DESKTOP_MOUNTINFO)
    stick = entries[2]
    assert stick.mountpoint == "/media/tech/My Stick\tx"
    assert stick.fstype == "vfat"
    assert stick.source == "/dev/sdc1"
    assert stick.devnum == (8, 33)
    assert entries[5].mountpoint == "/mnt/back\\slash"
    assert entries[5].root == "/grub"


def test_unescape_leaves_other_backslashes() -> None:
    assert unescape("a\\040b\\012c") == "a b\nc"
    assert unescape("\\x20 and \\9") == "\\x20 and \\9"


def test_table_keys_by_device_number_not_name() -> None:
    table = build_table(
        parse_mountinfo(DESKTOP_MOUNTINFO),
        {"/dev/sdb2": (8, 18), "/dev/sda3": (8, 3)}.get,
        parse_swaps(SWAPS),
    )
    assert table.mountpoints((254, 1)) == ("/",)  # the /dev/mapper alias counts by number
    assert table.mountpoints((8, 1)) == ("/boot", "/mnt/back\\slash")
    assert table.mountpoints((8, 33)) == ("/media/tech/My Stick\tx",)
    assert table.mountpoints((8, 18)) == ("/srv/data", "/srv/snap")  # btrfs via its source
    assert table.mountpoints((8, 3)) == (SWAP_MOUNTPOINT,)
    assert table.mountpoints((0, 45)) == ()  # anonymous numbers are never a disk
    assert table.mountpoints((8, 0)) == ()


def test_swaps_parse_and_files_are_skipped(tmp_path: Path) -> None:
    assert parse_swaps(SWAPS) == ["/dev/sda3", "/swap file"]
    assert parse_swaps("") == []
    assert parse_swaps("Filename\tType\tSize\tUsed\tPriority\n") == []
    swap_file = tmp_path / "swap file"
    swap_file.write_bytes(b"\0" * 4096)
    # a swap file is not a block device: the filesystem holding it is mounted and counts already
    assert block_devnum(str(swap_file)) is None
    assert block_devnum("/dev/null") is None  # a character device
    assert block_devnum(str(tmp_path / "missing")) is None
    assert build_table([], block_devnum, [str(swap_file)]).by_devnum == {}


def test_devnum() -> None:
    assert parse_devnum("259:3\n") == (259, 3)
    with pytest.raises(InputError):
        parse_devnum("sda")


@pytest.mark.parametrize(
    "line",
    [
        "27 1 254:0 / / rw,relatime ext4 /dev/vda rw",  # no separator
        "27 1 254:0 / / rw,relatime - ext4",  # no source
        "x 1 254:0 / / rw - ext4 /dev/vda rw",  # id not a number
        "27 1 254-0 / / rw - ext4 /dev/vda rw",  # bad major:minor
        "27 1",
        "-",
    ],
)
def test_garbage_raises_naming_the_file(line: str) -> None:
    with pytest.raises(InputError, match="mountinfo"):
        parse_mountinfo(line + "\n")


def test_bad_swaps_header_raises() -> None:
    with pytest.raises(InputError, match="swaps"):
        parse_swaps("garbage\n/dev/sda3 partition 1 0 -2\n")
