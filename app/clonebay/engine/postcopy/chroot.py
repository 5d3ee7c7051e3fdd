"""A chroot of the target's Linux root, for the tools only the target's own system has right
(grub-install, update-grub, update-initramfs: their versions must match the installed GRUB
modules and kernel).

The whole target is attached as one loop device with partition nodes, so the root is mounted
from a partition of a disk (grub-install asks the kernel which disk holds /boot and writes its
boot code there). /boot from the target's fstab is mounted too when it is a separate partition
of the same target. The programs run are the copied disk's own, so they are confined: /dev is a
private tmpfs with only the target's disk and partition nodes (and null, zero, random...),
/proc is fresh, /sys read-only, and they run without the capabilities to mount, make device
nodes or do raw I/O (setpriv's bounding set): they can write no disk but the target. Everything
is taken down again in reverse order, whatever happens.

An ESP is FAT, which this host's kernel may lack: a tool that writes to /boot/efi is given a
scratch FAT image there instead (a file, mounted with fusefat), and the pass copies what it
wrote onto the real ESP with mtools (engine/postcopy/grub.py).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clonebay.engine.postcopy import mounts
from clonebay.engine.postcopy.systems import Installed, Survey, inside
from clonebay.errors import CommandError, DeviceError
from clonebay.system import loopdev
from clonebay.system.run import run

BINDS = ("dev", "proc", "sys")
CHAR_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9)}
# Capabilities the target's programs run without: no mounting, no device nodes, no raw I/O,
# no modules, no reboot. What runs in the chroot comes from the copied disk; without these it
# can reach no disk but the target's own nodes in the private /dev.
DROPPED = "-sys_admin,-mknod,-sys_rawio,-sys_module,-sys_boot,-net_admin,-sys_ptrace,-sys_time"
STEP_DEADLINE = 900.0  # update-initramfs under TCG emulation takes minutes


@dataclass(frozen=True)
class Chroot:
    """A target system ready for chrooted commands: its root, the whole-disk device."""

    root: Path
    disk: str  # /dev/loopN: the whole target
    partitions: dict[int, str]  # partition number -> /dev/loopNpK

    def run(self, *argv: str, env: dict[str, str] | None = None) -> str:
        """``argv`` inside the target; its output (stdout and stderr)."""
        environ = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
        environ.update(env or {})
        try:
            confined = ["setpriv", "--bounding-set", DROPPED, "chroot", str(self.root)]
            proc = run([*confined, *argv], env=environ, timeout=STEP_DEADLINE)
        except CommandError as exc:
            raise DeviceError(f"{argv[0]} in the target's system failed: {exc}") from exc
        return (proc.stdout + proc.stderr).decode(errors="replace")

    @contextlib.contextmanager
    def device(self, node: str) -> Iterator[None]:
        """Another block device (a scratch FAT's loop device) in the private /dev, for a while."""
        made = self.root / "dev" / Path(node).name
        os.mknod(made, 0o660 | stat.S_IFBLK, os.stat(node).st_rdev)
        try:
            yield
        finally:
            made.unlink(missing_ok=True)

    def has(self, rel: str) -> bool:
        return (self.root / rel.lstrip("/")).exists()


def _private_dev(
    root: Path, disk: str, nodes: dict[int, str], survey: Survey, stack: contextlib.ExitStack
) -> None:
    """The chroot's /dev: a small tmpfs holding the target's disk and partition nodes, their
    /dev/disk/by-uuid and by-partuuid links (as udev makes them: grub-mkconfig names the root
    by UUID only when the link is there) and the character devices every program expects;
    nothing of the machine's other disks."""
    at = inside(root, "dev")
    run(["mount", "-t", "tmpfs", "-o", "mode=755,size=1m,nosuid", "clonebay-dev", str(at)])
    stack.callback(mounts.unmount_keep, at)
    for name, (major, minor) in CHAR_DEVICES.items():
        os.mknod(at / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    for node in [disk, *nodes.values()]:
        os.mknod(at / Path(node).name, 0o660 | stat.S_IFBLK, os.stat(node).st_rdev)
    (at / "fd").symlink_to("/proc/self/fd")
    for kind in ("by-uuid", "by-partuuid"):
        (at / "disk" / kind).mkdir(parents=True)
    for inst in survey.installed:
        part_node = nodes.get(inst.partition.number)
        if part_node is None:
            continue
        link = f"../../{Path(part_node).name}"
        if inst.volume.uuid:  # as the prober and udev write it (FAT and NTFS upper case)
            (at / "disk/by-uuid" / inst.volume.uuid).symlink_to(link)
        if inst.partition.guid:
            (at / "disk/by-partuuid" / inst.partition.guid.lower()).symlink_to(link)


def chroot_ready(root: Path) -> bool:
    """Whether a mounted root can run its own grub-install (the tool, and /dev, /proc, /sys
    to bind-mount onto)."""
    tools = (root / "usr/sbin/grub-install").exists()
    return tools and all(
        (root / name).is_dir() and not (root / name).is_symlink() for name in BINDS
    )


def _partition_nodes(disk: str) -> dict[int, str]:
    name = Path(disk).name
    nodes = {}
    for entry in Path("/sys/class/block").iterdir():
        if entry.name.startswith(f"{name}p") and entry.name[len(name) + 1 :].isdigit():
            nodes[int(entry.name[len(name) + 1 :])] = f"/dev/{entry.name}"
    for number, node in nodes.items():
        if not os.path.exists(node):
            raise DeviceError(f"partition {number} of {disk} has no device node {node}")
    return nodes


def _fstab_mounts(root: Path) -> dict[str, str]:
    """Mount point -> source ("UUID=..." or a device) for /boot and /boot/efi in fstab."""
    out = {}
    with contextlib.suppress(OSError):
        for line in (root / "etc/fstab").read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[1] in {"/boot", "/boot/efi"}:
                out[fields[1]] = fields[0]
    return out


def _find(survey: Survey, source: str) -> Installed | None:
    key, _, value = source.partition("=")
    for inst in survey.installed:
        if key == "UUID" and inst.volume.uuid.lower() == value.lower():
            return inst
        if key == "PARTUUID" and inst.partition.guid.lower() == value.lower():
            return inst
    return None


@contextlib.contextmanager
def opened(target: str, survey: Survey, system: Installed) -> Iterator[Chroot]:
    """``system`` (a Linux root of ``target``) mounted read-write with its /boot, chrootable."""
    disk = loopdev.attach(target, partitions=True)
    stack = contextlib.ExitStack()
    try:
        nodes = _partition_nodes(disk)
        node = nodes.get(system.partition.number)
        if node is None:
            raise DeviceError(f"{target}: the kernel shows no partition {system.partition.number}")
        where = mounts.mount_point(f"chroot-p{system.partition.number}")
        stack.callback(mounts.unmount, where, node)
        run(["mount", "-t", system.volume.fstype, node, str(where)], timeout=120)
        boot = _fstab_mounts(where).get("/boot")
        part = _find(survey, boot) if boot else None
        if part is not None and part.partition.number != system.partition.number:
            at = inside(where, "boot")
            run(["mount", nodes[part.partition.number], str(at)], timeout=120)
            stack.callback(mounts.unmount_keep, at)
        _private_dev(where, disk, nodes, survey, stack)
        for fstype, name, opts in (("proc", "proc", "nosuid,nodev,noexec"), ("sysfs", "sys", "ro")):
            at = inside(where, name)
            run(["mount", "-t", fstype, "-o", opts, fstype, str(at)], timeout=60)
            stack.callback(mounts.unmount_keep, at)
        with stack:
            yield Chroot(where, disk, nodes)
    finally:
        stack.close()
        loopdev.detach(disk, partitions=True)
