"""``clonebay stores``: the partitions of the attached disks that can hold images, with their
size, free space and the images they hold, and the ones that cannot, with the reason.

Each partition with a filesystem a store can use is mounted read-only for a moment (or looked at
where it is mounted already) to read its free space and find images: folders with a
manifest.json (an incomplete save has none: listed as such) and image stream files, two folder
levels deep at most, so a full disk is not walked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from clonebay.engine.stores.local import FILESYSTEMS, Volume, check_store, mounted, probe
from clonebay.engine.stores.space import free_bytes
from clonebay.errors import ClonebayError
from clonebay.imaging.spec import MANIFEST_NAME
from clonebay.imaging.stream import STREAM_MAGIC
from clonebay.system.udev import list_disks, partition_paths

DEPTH = 2


@dataclass(frozen=True)
class StoreInfo:
    device: str
    fstype: str
    label: str
    uuid: str
    size: int
    free: int | None = None
    images: list[str] = field(default_factory=list)
    usable: bool = True
    reason: str = ""

    @property
    def url(self) -> str:
        """The store URL of this partition's top folder."""
        return f"disk:LABEL={self.label}" if self.label else f"disk:{self.device}"


def _size(device: str) -> int:
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def find_images(root: Path, depth: int = DEPTH) -> list[str]:
    """Image folders and stream files under ``root`` (relative paths), ``depth`` levels deep."""
    found: list[str] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            if (entry / MANIFEST_NAME).is_file():
                found.append(entry.name)
            elif (entry / "packs").is_dir():
                found.append(entry.name + " (incomplete: no manifest)")
            elif depth > 1:
                found += [f"{entry.name}/{sub}" for sub in find_images(entry, depth - 1)]
        elif entry.is_file() and _is_stream(entry):
            found.append(entry.name)
    return found


def _is_stream(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(STREAM_MAGIC)) == STREAM_MAGIC
    except OSError:
        return False


def _look(volume: Volume, size: int, job_devices: Iterable[str]) -> StoreInfo:
    info = StoreInfo(volume.device, volume.fstype, volume.label, volume.uuid, size)
    try:
        check_store(volume, job_devices)
        with mounted(volume, write=False, peek=True) as root:
            return replace(info, free=free_bytes(str(root)), images=find_images(root))
    except ClonebayError as exc:
        return replace(info, usable=False, reason=exc.message)


def list_local(job_devices: Iterable[str] = ()) -> list[StoreInfo]:
    """Every partition (or whole-disk filesystem) a store could be, in disk order."""
    devices = list(job_devices)
    found: list[StoreInfo] = []
    for disk in list_disks():
        for device in [disk.path, *partition_paths(disk)]:
            try:
                volume = probe(device)
            except ClonebayError:
                continue
            if volume.fstype in FILESYSTEMS:
                found.append(_look(volume, _size(device), devices))
    return found
