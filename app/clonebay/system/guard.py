"""May this target be written? The checks every writing job makes before its first write.

A target is refused when it is the source (the same file or device through another path, a
partition of it or the disk that holds it, or another device with the same serial or WWN), when
it or one of its partitions is mounted or held by md/LVM/dm, when it holds the running live
system, or when it is smaller than the job needs. Each refusal says which rule and why, and
comes before anything is written.
"""

from __future__ import annotations

import os
import stat

from clonebay.errors import SafetyError, TargetTooSmallError
from clonebay.model import Disk
from clonebay.system import udev
from clonebay.units import human_size


def _identity(path: str) -> tuple[str, int, int]:
    """('blk', major, minor) for a block device, ('file', dev, inode) for a file."""
    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        return ("blk", os.major(st.st_rdev), os.minor(st.st_rdev))
    return ("file", st.st_dev, st.st_ino)


def _whole_disk(path: str) -> Disk | None:
    if not os.path.exists(path) or not stat.S_ISBLK(os.stat(path).st_mode):
        return None
    return udev.find_disk(path)


def _backing_file(disk: Disk | None) -> str:
    """The file behind a loop device (its model is "loop: FILE"), or ''."""
    if disk and disk.model.startswith("loop: "):
        return disk.model.removeprefix("loop: ")
    return ""


def check_not_source(source: str, target: str) -> None:
    """Refuse a target that is the source, contains it, lies inside it, or shares its serial."""
    if not os.path.exists(target):
        return
    src_id, dst_id = _identity(source), _identity(target)
    if src_id == dst_id:
        raise SafetyError(f"the target {target} is the source {source}; nothing was written")
    src_disk, dst_disk = _whole_disk(source), _whole_disk(target)
    if src_disk and dst_disk and src_disk.path == dst_disk.path:
        raise SafetyError(
            f"the target {target} and the source {source} are on the same disk"
            f" {src_disk.path}; nothing was written"
        )
    for a, b in ((src_disk, dst_disk), (dst_disk, src_disk)):
        if a and b and a.serial and a.serial == b.serial and a.transport == b.transport:
            raise SafetyError(
                f"{a.path} and {b.path} report the same serial {a.serial}: they may be one disk"
                " seen twice (multipath); refusing to write"
            )
        if a and b and a.wwn and a.wwn == b.wwn:
            raise SafetyError(f"{a.path} and {b.path} have the same WWN {a.wwn}; refusing")
    src_file, dst_file = _backing_file(src_disk), _backing_file(dst_disk)
    if src_file and dst_file and _identity(src_file) == _identity(dst_file):
        raise SafetyError(
            f"{source} and {target} are loop devices over the same file {src_file};"
            " nothing was written"
        )
    for disk, other in ((dst_disk, source), (src_disk, target)):
        backing = _backing_file(disk)
        if backing and os.path.exists(other) and _identity(backing) == _identity(other):
            raise SafetyError(
                f"{disk.path if disk else ''} is a loop device over {other}: the source and the"
                " target are the same data; nothing was written"
            )


def check_target_free(target: str) -> None:
    """Refuse a mounted, held or live-system target block device."""
    disk = _whole_disk(target)
    if disk is None:
        return
    if disk.is_live_medium:
        raise SafetyError(f"{target} holds the running system; it can never be a target")
    if disk.mountpoints:
        raise SafetyError(
            f"{target} is mounted ({', '.join(disk.mountpoints)}): unmount it first;"
            " nothing was written"
        )
    if disk.holders:
        raise SafetyError(
            f"{target} is in use by {', '.join(disk.holders)} (RAID, LVM or device-mapper):"
            " stop those first; nothing was written"
        )


def check_size(target_size: int, needed: int, what: str) -> None:
    if target_size < needed:
        raise TargetTooSmallError(
            f"the target holds {human_size(target_size)} ({target_size} bytes); {what} needs"
            f" {human_size(needed)} ({needed} bytes); nothing was written"
        )


def check_target(source: str | None, target: str) -> None:
    """Every refusal that does not depend on the plan's size (source None: restore/receive)."""
    if source is not None:
        check_not_source(source, target)
    check_target_free(target)


def check_source_free(source: str, allow_mounted: bool = False) -> list[str]:
    """Refuse a source mounted read-write (or warn, with allow_mounted); the warnings."""
    disk = _whole_disk(source)
    if disk is None or not disk.mountpoints:
        return []
    where = ", ".join(disk.mountpoints)
    if allow_mounted:
        return [f"the source {source} is mounted ({where}): the copy may be inconsistent"]
    raise SafetyError(
        f"the source {source} is mounted ({where}): unmount it or pass"
        " --allow-mounted-source; nothing was written"
    )
