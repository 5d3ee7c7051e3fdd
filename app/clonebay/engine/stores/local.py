"""Disk stores: a partition of an attached disk (USB stick, external or internal disk) that holds
images, found by label, UUID or device node, mounted by clonebay and unmounted after the job.

Filesystems: ext2/3/4 (the kernel's driver), NTFS (ntfs-3g, which refuses a hibernated or
unclean Windows volume read-write rather than lose its data), FAT32 and exFAT (the kernel's vfat
and exfat drivers; where a kernel has none, as on the build machine, the FUSE drivers fusefat and
exfat-fuse). A partition already mounted is used where it is (read-write needed for a save).

A partition is never a store when
  - it lies on the job's source or target disk, or shares any device with them in the device
    graph (a store inside the disk being overwritten would be overwritten; a store on the
    source would change the source while it is copied);
  - it is the live system's own medium (mounted at /, at a live-boot medium mount, or the ISO's
    iso9660 filesystem) or an EFI system partition (boot loaders, not images).
Each refusal names the rule; all come before anything is mounted or written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clonebay.engine.stores.mounting import attempt, mount_dir, unmount
from clonebay.errors import CommandError, SafetyError, StoreError
from clonebay.system import run as runner
from clonebay.system.devgraph import Graph, identify, lower
from clonebay.system.mounts import read_mount_table
from clonebay.system.udev import LIVE_MEDIUM_MOUNTS, SYSTEM_ROOT

FILESYSTEMS = ("ext2", "ext3", "ext4", "ntfs", "vfat", "exfat")
ESP_TYPES = ("0xef", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
FUSE_FALLBACK = {"vfat": ["fusefat", "-o", "{mode}"], "exfat": ["mount.exfat-fuse", "-o", "{mode}"]}


@dataclass(frozen=True)
class Volume:
    """What blkid says a partition holds."""

    device: str
    fstype: str
    label: str = ""
    uuid: str = ""
    part_type: str = ""

    @property
    def name(self) -> str:
        return self.label or os.path.basename(self.device)


def probe(device: str) -> Volume:
    """blkid's low-level probe of ``device`` (no cache): filesystem type, label, UUID."""
    text = runner.output(["blkid", "-p", "-o", "export", device], ok_codes=(0, 2))
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return Volume(
        device,
        values.get("TYPE", ""),
        values.get("LABEL", ""),
        values.get("UUID", ""),
        values.get("PART_ENTRY_TYPE", "").lower(),
    )


def find_device(selector: str) -> str:
    """``LABEL=x`` / ``UUID=x`` / ... or a device node -> the one device it names."""
    if selector.startswith("/dev/"):
        return selector
    text = runner.output(
        ["blkid", "-c", "/dev/null", "-o", "device", "-t", selector], ok_codes=(0, 2)
    )
    found = sorted(set(text.split()))
    if not found:
        raise StoreError(f"no partition has {selector} (is the disk plugged in?)")
    if len(found) > 1:
        raise StoreError(
            f"{len(found)} partitions have {selector}: {', '.join(found)}; name one with"
            " disk:/dev/NODE/..."
        )
    return found[0]


def check_store(volume: Volume, job_devices: Iterable[str]) -> None:
    """The module docstring's rules; SafetyError or StoreError naming the one that failed."""
    if volume.fstype not in FILESYSTEMS:
        what = f"a {volume.fstype} filesystem" if volume.fstype else "no filesystem clonebay knows"
        raise StoreError(
            f"{volume.device} holds {what}: an image store needs {', '.join(FILESYSTEMS)}"
        )
    if volume.part_type in ESP_TYPES:
        raise SafetyError(
            f"{volume.device} is an EFI system partition (boot loaders, not images): pick"
            " another partition; nothing was written"
        )
    points = mountpoints(volume.device)
    if any(p == SYSTEM_ROOT or p in LIVE_MEDIUM_MOUNTS for p in points):
        raise SafetyError(
            f"{volume.device} is the running system's own medium ({', '.join(points)}): pick"
            " another partition; nothing was written"
        )
    graph = Graph.read()
    store = lower(graph, identify(volume.device))
    for device in job_devices:
        try:
            shared = store & lower(graph, identify(device))
        except OSError:
            continue
        if shared:
            names = ", ".join(sorted(graph.describe(i) for i in shared))
            raise SafetyError(
                f"the store {volume.device} lies on {names},"
                f" which the job reads or writes ({device}): images there would be overwritten or"
                " would change the copy; put them on another disk; nothing was written"
            )


def mountpoints(device: str) -> tuple[str, ...]:
    """Where ``device`` is mounted now."""
    try:
        number = os.stat(device).st_rdev
    except OSError:
        return ()
    return read_mount_table().mountpoints((os.major(number), os.minor(number)))


def _mount_argv(volume: Volume, where: Path, write: bool, peek: bool = False) -> list[str]:
    mode = "rw" if write else "ro"
    if peek and volume.fstype in ("ext3", "ext4"):
        mode += ",noload"  # a read-only ext3/4 mount still replays a dirty journal: not here
    if volume.fstype == "ntfs":
        return ["ntfs-3g", "-o", mode, volume.device, str(where)]
    return ["mount", "-t", volume.fstype, "-o", mode, volume.device, str(where)]


def _fuse_argv(volume: Volume, where: Path, write: bool) -> list[str] | None:
    template = FUSE_FALLBACK.get(volume.fstype)
    if template is None:
        return None
    mode = ("rw+" if volume.fstype == "vfat" else "rw") if write else "ro"
    return [part.format(mode=mode) for part in template] + [volume.device, str(where)]


@contextlib.contextmanager
def mounted(volume: Volume, *, write: bool, peek: bool = False) -> Iterator[Path]:
    """The volume's folder for the job: where it is mounted already, or a mount of clonebay's
    under /run/clonebay/stores, taken down afterwards. ``peek`` (``clonebay stores`` looking
    at every partition of the machine) writes nothing at all, not even a journal replay."""
    points = [p for p in mountpoints(volume.device) if p != "[SWAP]"]
    if points:
        where = Path(points[0])
        if write and not os.access(where, os.W_OK):
            raise StoreError(f"{volume.device} is mounted read-only at {where}: remount it rw")
        yield where
        return
    where = mount_dir(volume.name)
    try:
        argv = _mount_argv(volume, where, write, peek)
        failure = attempt(argv, what=f"mounting {volume.device}")
        fuse = _fuse_argv(volume, where, write)
        if failure is not None and fuse is not None and "unknown filesystem" in failure.text:
            failure = attempt(fuse, what=f"mounting {volume.device}")
        if failure is not None:
            raise StoreError(_explain(volume, failure.text))
        yield where
    finally:
        unmount(where)


def _explain(volume: Volume, text: str) -> str:
    lower_text = text.lower()
    if "hibernat" in lower_text or "unclean" in lower_text or "fast restart" in lower_text:
        return (
            f"{volume.device} holds a Windows volume that was hibernated or not shut down"
            " cleanly (Fast Startup): mounting it read-write would lose Windows' data. Shut"
            " Windows down fully (shutdown /s /f /t 0) or pick another partition"
        )
    last = text.strip().splitlines()[-1] if text.strip() else "no message"
    return f"cannot mount {volume.device} ({volume.fstype}): {last}"


def open_volume(selector: str, job_devices: Iterable[str]) -> Volume:
    """The store partition a ``disk:`` URL names, checked against the job's devices."""
    device = find_device(selector)
    if not os.path.exists(device):
        raise StoreError(f"{device} does not exist (is the disk plugged in?)")
    try:
        volume = probe(device)
    except CommandError as exc:
        raise StoreError(f"cannot read {device}: {exc.message}") from exc
    check_store(volume, job_devices)
    return volume
