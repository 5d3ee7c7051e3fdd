"""Which driver mounts which filesystem from a partition file, and how it is undone.

* ext2/3/4: the kernel's ext4 driver on a loop device over the partition file. Read-only
  mounts use ``ro,noload``: the loop device is read-only, so a journal that needs recovery
  could not be replayed anyway, and the view shows the last checkpointed state. An edit mounts
  read-write and replays the journal into the copy-on-write overlay, never into the image.
  Without loop devices (a container), fuse2fs serves the file instead.
* NTFS: ntfs-3g on the file; names come back exactly as NTFS stores them (UTF-16 -> UTF-8),
  alternate data streams as ``user.*`` extended attributes.
* FAT12/16/32: clonebay's own read-only driver (fatfs.py), also during an edit: the live
  kernel has no vfat and fusefat misreads folders. mtools can still edit the partition file.

A FUSE driver keeps the partition file open until its process exits after the unmount; the
pids are recorded so that unmounting waits for them (mounts.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clonebay.browse.procs import mounted_at, start_daemon
from clonebay.errors import ClonebayError, CommandError
from clonebay.system import loopdev
from clonebay.system.procs import holders
from clonebay.system.run import run
from clonebay.system.tools import which

if TYPE_CHECKING:
    from clonebay.browse.mounts import FsMount

NTFS_OPTIONS = "streams_interface=xattr"


@dataclass(frozen=True)
class Driver:
    name: str

    def mount(self, partition: Path, fs: FsMount, *, writable: bool, log_path: Path) -> None:
        """Mount ``partition`` at ``fs.directory``; records loop device and pids in ``fs``."""
        if self.name == "ext":
            _mount_ext(partition, fs, writable)
        elif self.name == "ntfs-3g":
            options = NTFS_OPTIONS + ("" if writable else ",ro")
            run(["ntfs-3g", "-o", options, str(partition), fs.directory])
            fs.pids = holders(partition)
        else:
            _mount_fat(partition, fs, log_path)


EXT, NTFS, FAT = Driver("ext"), Driver("ntfs-3g"), Driver("fat")
DRIVERS = {
    "ext2": EXT, "ext3": EXT, "ext4": EXT, "ntfs": NTFS, "fat12": FAT, "fat16": FAT, "fat32": FAT,
}  # fmt: skip


def for_fstype(fstype: str) -> Driver | None:
    return DRIVERS.get(fstype)


def _mount_ext(partition: Path, fs: FsMount, writable: bool) -> None:
    try:
        loop = loopdev.attach(str(partition), read_only=not writable)
    except CommandError:
        if which("fuse2fs") is None:
            raise
        options = "fakeroot" + ("" if writable else ",ro")
        run(["fuse2fs", "-o", options, str(partition), fs.directory])
        fs.driver = "fuse2fs"
        fs.pids = holders(partition)
        return
    fs.loop = loop
    try:
        run(["mount", "-t", "ext4", "-o", "rw" if writable else "ro,noload", loop, fs.directory])
    except ClonebayError:
        loopdev.detach(loop)
        fs.loop = ""
        raise


def _mount_fat(partition: Path, fs: FsMount, log_path: Path) -> None:
    fs.pids = [start_daemon(["fat", str(partition), fs.directory], log_path)]


def unmount(fs: FsMount) -> None:
    """Unmount one filesystem (a busy one raises before anything else is undone)."""
    if mounted_at(fs.directory):
        try:
            run(["umount", fs.directory])
        except CommandError as exc:
            if "busy" in exc.stderr:
                raise ClonebayError(
                    f"{fs.directory} is busy: close the shells and programs using it, then run"
                    " clonebay umount again"
                ) from None
            raise
    if fs.loop:
        loopdev.detach(fs.loop)
        fs.loop = ""
