"""Which block devices are mounted (or used as swap), keyed by device number.

The kernel's own view is /proc/self/mountinfo (proc(5)): one line per mount,

    36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)   (4)     (5)         (6)        (7)  (8) (9)    (10)        (11)

with mount id, parent id, major:minor of the device, root of the mount inside the filesystem,
mount point, mount options, zero or more optional fields closed by "-", filesystem type, mount
source and super-block options. Spaces, tabs, newlines and backslashes inside paths are written
as octal escapes (\\040, \\011, \\012, \\134).

We key mounts by the major:minor field, not by the source name: the source is whatever string the
mounter passed ("/dev/root", "/dev/mapper/vg-root", a by-uuid link) while major:minor is the
device itself. Filesystems that span several devices (btrfs) report an anonymous device number
with major 0; for those the source path is resolved to a device number instead.

Active swap areas (/proc/swaps) are not mounts but make a device just as busy; they appear under
the pseudo mount point "[SWAP]", as lsblk shows them.

Parsing is pure (text in, records out); only ``read_mount_table`` touches /proc.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from clonebay.errors import InputError

MOUNTINFO = "/proc/self/mountinfo"
SWAPS = "/proc/swaps"
SWAP_MOUNTPOINT = "[SWAP]"

DevNum = tuple[int, int]
Resolver = Callable[[str], DevNum | None]

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
_DEVNUM = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo, with escapes decoded."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mountpoint: str
    fstype: str
    source: str

    @property
    def devnum(self) -> DevNum:
        return self.major, self.minor


@dataclass(frozen=True)
class MountTable:
    """Mount points (and "[SWAP]") per device number, in mountinfo order."""

    by_devnum: Mapping[DevNum, tuple[str, ...]] = field(default_factory=dict)

    def mountpoints(self, devnum: DevNum) -> tuple[str, ...]:
        return self.by_devnum.get(devnum, ())


def unescape(text: str) -> str:
    """Decode the kernel's octal escapes (``\\040`` -> space) in a mountinfo or swaps field."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_devnum(text: str) -> DevNum:
    """``"8:1"`` -> ``(8, 1)``; the format of mountinfo's field 3 and of sysfs ``dev`` files."""
    match = _DEVNUM.match(text.strip())
    if match is None:
        raise InputError(f"not a major:minor device number: {text.strip()!r}")
    return int(match.group(1)), int(match.group(2))


def parse_mountinfo_line(line: str, where: str = MOUNTINFO) -> MountEntry:
    """One mountinfo line -> MountEntry; InputError naming ``where`` when it is malformed."""
    fields = line.split()
    try:
        separator = fields.index("-", 6)
    except ValueError:
        raise InputError(f"{where}: no '-' separator in mount line {line!r}") from None
    if separator + 2 >= len(fields):
        raise InputError(f"{where}: mount line too short: {line!r}")
    if not (fields[0].isdigit() and fields[1].isdigit()):
        raise InputError(f"{where}: mount ids are not numbers in {line!r}")
    try:
        major, minor = parse_devnum(fields[2])
    except InputError:
        raise InputError(f"{where}: bad major:minor {fields[2]!r} in {line!r}") from None
    return MountEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        major=major,
        minor=minor,
        root=unescape(fields[3]),
        mountpoint=unescape(fields[4]),
        fstype=unescape(fields[separator + 1]),
        source=unescape(fields[separator + 2]),
    )


def parse_mountinfo(text: str, where: str = MOUNTINFO) -> list[MountEntry]:
    """Every mount in a mountinfo text, in order; blank lines are ignored."""
    return [parse_mountinfo_line(line, where) for line in text.splitlines() if line.strip()]


def parse_swaps(text: str, where: str = SWAPS) -> list[str]:
    """Paths of the active swap areas in a /proc/swaps text (first line is a header)."""
    lines = text.splitlines()
    if not lines:
        return []
    if not lines[0].startswith("Filename"):
        raise InputError(f"{where}: unexpected header {lines[0]!r}")
    return [unescape(line.split()[0]) for line in lines[1:] if line.strip()]


def build_table(
    entries: Iterable[MountEntry],
    resolve: Resolver,
    swaps: Iterable[str] = (),
) -> MountTable:
    """Group mount points by device number.

    ``resolve`` maps a path to the device number of the block device it names (or None); it is
    used for anonymous device numbers (major 0, e.g. btrfs) whose source is a /dev path, and for
    swap areas (a swap file's path resolves to None and is skipped: it lives on a mounted
    filesystem that already counts).
    """
    table: dict[DevNum, list[str]] = {}

    def add(devnum: DevNum, mountpoint: str) -> None:
        points = table.setdefault(devnum, [])
        if mountpoint not in points:
            points.append(mountpoint)

    for entry in entries:
        devnum: DevNum | None = entry.devnum
        if entry.major == 0:
            devnum = resolve(entry.source) if entry.source.startswith("/dev/") else None
        if devnum is not None:
            add(devnum, entry.mountpoint)
    for path in swaps:
        swap_devnum = resolve(path)
        if swap_devnum is not None:
            add(swap_devnum, SWAP_MOUNTPOINT)
    return MountTable({key: tuple(points) for key, points in table.items()})


def block_devnum(path: str) -> DevNum | None:
    """Device number of the block device at ``path`` (symlinks followed), or None."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(info.st_mode):
        return None
    return os.major(info.st_rdev), os.minor(info.st_rdev)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def read_mount_table(mountinfo: str = MOUNTINFO, swaps: str = SWAPS) -> MountTable:
    """The running system's mounts and swap areas, keyed by device number."""
    entries = parse_mountinfo(_read_text(mountinfo), mountinfo)
    return build_table(entries, block_devnum, parse_swaps(_read_text(swaps), swaps))
