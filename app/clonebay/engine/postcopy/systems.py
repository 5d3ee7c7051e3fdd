"""What is installed on the target: which partition holds which operating system.

The survey probes every partition (the same prober as every job), then looks inside the ones
that may hold an OS, read-only: an ext2/3/4 volume with /etc/os-release is a Linux root; an
NTFS volume with Windows/System32/config/SYSTEM is a Windows; a FAT volume with the ESP type
(or an /EFI folder) is an EFI system partition. A volume that is not clean (hibernated,
dirty, needing journal recovery, encrypted) is not opened at all: it is listed with the reason,
and nothing in it is edited.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from clonebay.engine.inspect import DiskReport, inspect_disk
from clonebay.engine.postcopy import mounts
from clonebay.errors import DeviceError, InputError
from clonebay.model import Partition, Volume, VolumeState

ESP_TYPES = frozenset({"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "0xef"})
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"


@dataclass(frozen=True)
class Installed:
    """One partition of the target and what it holds."""

    partition: Partition
    volume: Volume
    kind: str  # "linux", "windows", "esp", "data"
    name: str = ""  # "Debian GNU/Linux 12 (bookworm)", "Windows"
    why_not: str = ""  # set when the volume may not be edited

    @property
    def where(self) -> str:
        what = f"{self.volume.fstype}, {self.name}" if self.name else self.volume.fstype
        return f"p{self.partition.number} ({what})"

    @property
    def editable(self) -> bool:
        return not self.why_not


@dataclass(frozen=True)
class Survey:
    """The target's table and every partition that holds a volume."""

    report: DiskReport
    installed: tuple[Installed, ...]

    def of_kind(self, kind: str) -> list[Installed]:
        return [i for i in self.installed if i.kind == kind]

    @property
    def bios_boot(self) -> Partition | None:
        for pr in self.report.partitions:
            if pr.partition.type_id.upper() == BIOS_BOOT_TYPE:
                return pr.partition
        return None


def why_not_editable(volume: Volume) -> str:
    """Why the pass leaves a volume alone, or "" when it may edit it."""
    state = volume.state
    if state is VolumeState.CLEAN:
        return ""
    if state is VolumeState.HIBERNATED:
        return (
            "Windows is hibernated (or shut down with Fast Startup): only that machine may"
            " resume it"
        )
    if state is VolumeState.ENCRYPTED:
        return "the volume is encrypted"
    if state is VolumeState.DIRTY:
        return "the volume was not cleanly unmounted (dirty)"
    if state is VolumeState.NEEDS_RECOVERY:
        return "its journal needs recovery (the OS was not shut down cleanly)"
    if state is VolumeState.ERRORS:
        return "the filesystem has recorded errors"
    return f"its state is {state.value}"


def inside(root: Path, rel: str) -> Path:
    """``root/rel`` reached with no symbolic link on the way. A mounted target's links point
    into the machine running the pass (an absolute link /etc -> /etc is the live system's own
    /etc), so the pass never follows one when it writes."""
    here = root
    for name in Path(rel).parts:
        here = here / name
        if here.is_symlink():
            raise InputError(
                f"/{here.relative_to(root)} on the target is a symbolic link (to"
                f" {os.readlink(here)}): the post-copy pass does not write through links"
            )
    return here


def find_ci(root: Path, relative: str) -> Path | None:
    """``relative`` under ``root``, matching each name case-insensitively (NTFS and FAT names
    are case-insensitive; ntfs-3g is not)."""
    here = root
    for name in relative.strip("/").split("/"):
        exact = here / name
        if exact.exists():
            here = exact
            continue
        try:
            match = next((c for c in here.iterdir() if c.name.lower() == name.lower()), None)
        except OSError:
            return None
        if match is None:
            return None
        here = match
    return here


def os_release_name(root: Path) -> str:
    """PRETTY_NAME from /etc/os-release (or /usr/lib/os-release), "" when there is none."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = root / rel
        if path.is_symlink():
            target = Path(path.readlink())
            path = root / (
                target.relative_to("/") if target.is_absolute() else Path(rel).parent / target
            )
        with contextlib.suppress(OSError, ValueError):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"') or "Linux"
            return "Linux"
    return ""


def _look_inside(target: str, part: Partition, volume: Volume) -> tuple[str, str]:
    fstype = volume.fstype
    if fstype.startswith("ext"):
        with mounts.volume(target, part, fstype, writable=False) as m:
            name = os_release_name(m.root)
            return ("linux", name) if name else ("data", "")
    if fstype == "ntfs":
        with mounts.volume(target, part, fstype, writable=False) as m:
            if find_ci(m.root, "Windows/System32/config/SYSTEM") is not None:
                return "windows", "Windows"
            if find_ci(m.root, "Boot/BCD") is not None:
                return "windows-boot", "Windows boot files"
        return "data", ""
    return "data", ""


def survey(target: str, source_clean: frozenset[int] = frozenset()) -> Survey:
    """Every partition of ``target`` and what it holds (read-only). A dirty NTFS whose source
    was clean (``source_clean``) is editable: the flag is ntfsresize's, set when the copy grew
    or shrank it so that Windows checks the volume at its next boot."""
    report = inspect_disk(target)
    found = []
    for pr in report.partitions:
        vol = pr.volume
        if vol is None:
            continue
        part = pr.partition
        why = why_not_editable(vol)
        if vol.state is VolumeState.DIRTY and vol.fstype == "ntfs" and part.number in source_clean:
            why = ""
        if part.type_id.upper() in ESP_TYPES or part.type_id.lower() in ESP_TYPES:
            found.append(Installed(part, vol, "esp", "EFI system partition", why))
            continue
        if why or not (vol.fstype.startswith("ext") or vol.fstype == "ntfs"):
            found.append(Installed(part, vol, "data", "", why))
            continue
        try:
            kind, name = _look_inside(target, part, vol)
        except DeviceError as exc:
            found.append(Installed(part, vol, "data", "", f"it could not be mounted: {exc}"))
            continue
        found.append(Installed(part, vol, kind, name))
    return Survey(report, tuple(found))
