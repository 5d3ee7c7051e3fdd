"""The target's volumes, opened one at a time for the post-copy pass.

Each volume is reached through a loop device over its byte range of the target (a disk or an
image file alike), mounted under /run/clonebay/fixup: ext2/3/4 with the kernel's driver, NTFS
with ntfs-3g (FUSE). A look is read-only (``ro,noload`` for ext: no journal replay, nothing
written); an edit remounts read-write only the volume it edits. The ESP is FAT, which this
host's kernel may lack: it is read and written with mtools at its byte offset instead
(engine/postcopy/esp.py).

Unmount always runs, and waits for ntfs-3g to exit before the loop device goes: a FUSE daemon
still writing when its device is detached would lose the end of the edit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clonebay.engine.stores.mounting import is_mountpoint, mount_dir
from clonebay.errors import CommandError, DeviceError
from clonebay.model import Partition
from clonebay.system import loopdev
from clonebay.system.run import run

FIXUP_DIR = Path(os.environ.get("CLONEBAY_FIXUP_DIR", "/run/clonebay/fixup"))
FUSE_EXIT_WAIT = 30.0  # seconds for ntfs-3g to write back and exit after umount


@dataclass(frozen=True)
class Mounted:
    """A target volume mounted for the pass: its root and the loop device under it."""

    root: Path
    device: str
    fstype: str
    writable: bool


def mount_point(name: str) -> Path:
    """A fresh, empty folder under FIXUP_DIR."""
    return mount_dir(name, FIXUP_DIR)


def _mount_argv(fstype: str, device: str, where: Path, writable: bool) -> list[str]:
    if fstype.startswith("ext"):
        opts = "rw" if writable else "ro,noload"
        return ["mount", "-t", fstype, "-o", f"{opts},nodev,nosuid", device, str(where)]
    if fstype == "ntfs":
        opts = "rw" if writable else "ro"
        return ["ntfs-3g", "-o", f"{opts},nodev,nosuid", device, str(where)]
    raise DeviceError(f"{fstype} volumes are not mounted by the post-copy pass")


def _fuse_pids(device: str) -> list[int]:
    """ntfs-3g processes serving ``device`` (their argv names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ntfs-3g") and device.encode() in argv:
            pids.append(int(entry.name))
    return pids


def unmount(where: Path, device: str) -> None:
    """Unmount ``where``; for FUSE, wait until its daemon has exited (written back)."""
    if is_mountpoint(where):
        try:
            run(["umount", str(where)], timeout=120)
        except CommandError as exc:
            raise DeviceError(
                f"cannot unmount the target volume at {where}: {exc}; the post-copy pass"
                " stopped with the volume still mounted"
            ) from exc
    deadline = time.monotonic() + FUSE_EXIT_WAIT
    while _fuse_pids(device):
        if time.monotonic() > deadline:
            raise DeviceError(
                f"ntfs-3g on {device} did not exit {FUSE_EXIT_WAIT:.0f} s after unmount: its"
                " last writes may be missing"
            )
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        where.rmdir()


def unmount_keep(where: Path) -> None:
    """Unmount ``where`` (a folder inside a mounted target: it stays)."""
    try:
        run(["umount", str(where)], timeout=120)
    except CommandError as exc:
        raise DeviceError(f"cannot unmount {where}: {exc}") from exc


@contextlib.contextmanager
def volume(target: str, part: Partition, fstype: str, *, writable: bool) -> Iterator[Mounted]:
    """Mount partition ``part`` of ``target`` (read-only unless ``writable``)."""
    device = loopdev.attach(target, offset=part.start, size=part.size, read_only=not writable)
    try:
        where = mount_point(f"p{part.number}")
        try:
            run(_mount_argv(fstype, device, where, writable), timeout=120)
        except CommandError as exc:
            with contextlib.suppress(OSError):
                where.rmdir()
            raise DeviceError(
                f"cannot mount partition {part.number} of {target} ({fstype}): {exc}"
            ) from exc
        try:
            yield Mounted(where, device, fstype, writable)
        finally:
            unmount(where, device)
    finally:
        loopdev.detach(device)
