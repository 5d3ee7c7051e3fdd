"""A real Debian 12 system disk and a QEMU boot that reports who the booted system is: the test
bed for the post-copy pass (issue 17), which gives a clone its own hostname, machine-id, SSH
host keys and (``--new-ids``) filesystem UUIDs, and a UEFI loader that an NVRAM never told about
the disk can find.

The disk (a sparse image file, GPT, 2 GiB, ~530 MiB of data) is what Debian's installer leaves
on a PC:

* p1, 1 MiB, BIOS boot (ef02): core.img of ``grub-install --target=i386-pc``, run by the
  target's own GRUB in a chroot, with GRUB's boot code in the protective MBR.
* p2, 100 MiB, ESP (FAT32, ef00, made by mkfs.vfat in a file): only ``EFI/debian/grubx64.efi``
  from ``grub-install --target=x86_64-efi --bootloader-id=debian --no-nvram`` — no
  ``EFI/BOOT/BOOTX64.EFI``. A PC boots it through the NVRAM entry the installer adds; a fresh
  NVRAM (a clone in another PC, OVMF with new vars) has none, and OVMF finds nothing to boot.
  That grub-install refuses an --efi-directory that is not a FAT ("doesn't look like an EFI
  partition") and the host kernel cannot mount one, so the system runs it itself on the build's
  first boot (under SeaBIOS), from a one-shot unit that then deletes itself.
* p3, the rest, ext4 root: debootstrap's minbase of bookworm plus systemd-sysv, udev, dbus,
  openssh-server, linux-image-cloud-amd64, initramfs-tools and GRUB; grub.cfg by update-grub
  (it finds the root by ``search --fs-uuid`` and boots ``root=UUID=``); /etc/fstab by UUID (root
  and ESP, no swap); hostname ``source-host`` (also 127.0.1.1 in /etc/hosts); a machine-id from
  systemd-machine-id-setup, copied by ``dbus-uuidgen --ensure`` into /var/lib/dbus/machine-id
  (a file, not a link); SSH host keys from ``ssh-keygen -A``; an old-style
  /etc/udev/rules.d/70-persistent-net.rules (a marker the post-copy pass removes). The first
  boot leaves /var/log/journal/<machine-id>/ behind, as any used system has.

Both GRUB images find their files by partition, not by UUID: their prefix is
``(,gpt3)/boot/grub``, the third partition of the disk they were loaded from. So
grubx64.efi copied to EFI/BOOT/BOOTX64.EFI is all OVMF with fresh vars needs, and a new root
UUID needs only grub.cfg, /etc/fstab (and the kernel command line in grub.cfg) rewritten.

On boot, clonebay-id.service (after local-fs.target, the machine-id's commit and ssh.service)
prints one line on ttyS0 and powers off::

    CLONEBAY-ID hostname=H machine-id=M root=<UUID of /> rootdev-serial=<virtio serial of the
    disk holding /> ssh=SHA256:<ed25519 host key> net-rules=present|absent boot=uefi|bios

Made fast under TCG: GRUB timeout 0, ``quiet``, an initramfs with only the virtio and ext4
modules (MODULES=list), gettys, logind, timers and e2scrub masked, no network device at all.
linux-image-cloud-amd64 boots ~9 s faster than linux-image-amd64 (29 s against 37-39 s to the
power-off under SeaBIOS) and is smaller (its .deb 26 MB against 70 MB).

The build runs once per machine: the disk and a JSON of its facts are kept in
/var/tmp/clonebay-debian-disk/<hash of this file down to "booting">/ (built under a temporary
name, renamed last, one build at a time under a lock; the .debs stay in its debs/ for the next
recipe) and each use gets a sparse copy (~1 s). Host packages: debootstrap, gdisk, dosfstools,
mtools, e2fsprogs, qemu-system-x86, ovmf; a network that reaches deb.debian.org.

Measured on a 2-core VM, TCG, one vCPU: the build 96 s from nothing (debootstrap ~50 s of it,
its first boot ~35 s), 83 s with the .debs kept; a boot to CLONEBAY-ID and power-off 29 s under
SeaBIOS, 25-28 s under OVMF; OVMF with fresh vars gives up on the disk as built in ~4 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import selectors
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from clonebay.engine.stores.sftp import fingerprint
from clonebay.system import loopdev
from clonebay.system.parttable import read_table
from clonebay.system.run import run
from clonebay.testdisks.files import sparse_copy, sparse_file
from tests.iso.qemu import OVMF_CODE, OVMF_VARS, Disk, _die_with_parent, _disk_args
from tests.shrink.sysdisk import accel

MIB = 1 << 20
SECTOR = 512
DISK_SIZE = 2048 * MIB
ESP_SIZE = 100 * MIB
ESP_NUMBER, ROOT_NUMBER = 2, 3
HOSTNAME = "source-host"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
KERNEL = "linux-image-cloud-amd64"
PACKAGES = (
    *("systemd-sysv", "udev", "dbus", "openssh-server", KERNEL, "initramfs-tools"),
    *("grub-pc-bin", "grub-efi-amd64-bin", "grub2-common"),
)
CACHE = Path(os.environ.get("CLONEBAY_DEBIAN_DISK_CACHE", "/var/tmp/clonebay-debian-disk"))
NET_RULES = "etc/udev/rules.d/70-persistent-net.rules"
ED25519_PUB = "etc/ssh/ssh_host_ed25519_key.pub"
MTOOLS = {"MTOOLS_SKIP_CHECK": "1"}
# program -> Debian package, checked up front so that a missing one is named with its package
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "sgdisk": "gdisk",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mkfs.ext4": "e2fsprogs",
    "qemu-system-x86_64": "qemu-system-x86",
}
MASKED = (
    "getty.target",  # no login prompt on the serial line the test reads
    "systemd-logind.service",  # ~1.5 s of TCG time, and nobody logs in
    "e2scrub_reap.service",
    *("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer"),
    *("e2scrub_all.timer", "fstrim.timer", "systemd-pstore.service"),
)

# --- the recipe: the cache key hashes this file down to "booting" -----------------------------

IDENTITY_SCRIPT = r"""#!/bin/sh
# The clonebay test bed (tests/postcopy/debian_disk.py): say on the serial port who this system
# is, in one line, and power off.
src=$(readlink -f "$(findmnt -no SOURCE /)")
part=${src##*/}
disk=$(basename "$(readlink -f "/sys/class/block/$part/..")")
serial=$(cat "/sys/block/$disk/serial" 2>/dev/null || echo none)
ssh=none
key=/etc/ssh/ssh_host_ed25519_key.pub
[ -r "$key" ] && ssh=$(ssh-keygen -lf "$key" | cut -d' ' -f2)
rules=absent
[ -e /etc/udev/rules.d/70-persistent-net.rules ] && rules=present
boot=bios
[ -d /sys/firmware/efi ] && boot=uefi
echo "CLONEBAY-ID hostname=$(cat /proc/sys/kernel/hostname) machine-id=$(cat /etc/machine-id)" \
    "root=$(findmnt -no UUID /) rootdev-serial=$serial ssh=$ssh net-rules=$rules boot=$boot" \
    > /dev/ttyS0
systemctl poweroff --no-block
"""

IDENTITY_UNIT = """\
[Unit]
Description=clonebay test bed: report this system's identity on ttyS0, then power off
After=local-fs.target systemd-machine-id-commit.service ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/clonebay-id

[Install]
WantedBy=multi-user.target
"""

# grub-install --target=x86_64-efi refuses an --efi-directory that is not a FAT ("doesn't look
# like an EFI partition") and the host cannot mount one: the system installs it itself, on the
# build's first boot (under SeaBIOS), and removes this unit.
GRUB_EFI_UNIT = """\
[Unit]
Description=clonebay test bed build: GRUB for UEFI onto the ESP, once
RequiresMountsFor=/boot/efi
Before=clonebay-id.service

[Service]
Type=oneshot
ExecStart=/usr/sbin/grub-install --target=x86_64-efi --efi-directory=/boot/efi \\
    --bootloader-id=debian --no-nvram --no-uefi-secure-boot
ExecStart=/usr/bin/systemctl disable clonebay-grub-efi.service
ExecStart=/usr/bin/rm /etc/systemd/system/clonebay-grub-efi.service

[Install]
WantedBy=multi-user.target
"""

GRUB_DEFAULTS = """\
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=ttyS0,115200 panic=-1"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""

# What udev's write_net_rules left before Debian 9 (stretch); a clone must lose it, or its NIC
# (another MAC) comes up as eth1.
OLD_NET_RULES = """\
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.
#
# You can modify it, as long as you keep each rule on a single line,
# and change only the value of the NAME= key.

# PCI device 0x1af4:0x1000 (virtio-pci)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="52:54:00:12:34:56", \
ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"
"""


class DebianDiskError(RuntimeError):
    """The Debian disk cannot be built here (a missing package, no network)."""


@dataclass(frozen=True)
class DebianDisk:
    """A built Debian disk and the identity its boot must report."""

    path: Path
    size: int
    hostname: str
    machine_id: str
    root_uuid: str
    esp_uuid: str  # the FAT's volume id as in /etc/fstab, e.g. 1A2B-3C4D
    ssh_fingerprint: str  # SHA256:… of the ed25519 host key
    kernel_release: str
    esp_start: int  # byte offsets and sizes of the ESP and the root
    esp_size: int
    root_start: int
    root_size: int

    @property
    def esp_image(self) -> str:
        """The ESP as mtools' -i takes it (the image file @@ the ESP's offset)."""
        return f"{self.path}@@{self.esp_start}"


def missing_packages() -> list[str]:
    """Debian packages the build and the boot need that are not installed (empty: all are)."""
    absent = {pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None}
    if not (OVMF_CODE.exists() and OVMF_VARS.exists()):
        absent.add("ovmf")
    return sorted(absent)


def recipe_key() -> str:
    """A hash of how the disk is built: this file up to its booting part, docstring left out."""
    text = Path(__file__).read_text()
    recipe = text.split("\n# --- booting ---", 1)[0].replace(__doc__ or "", "")
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_debian_disk(path: Path) -> DebianDisk:
    """A sparse copy at ``path`` of the cached Debian disk, built first when there is none."""
    entry = CACHE / recipe_key()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as lock:  # one build at a time; the others wait for it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (entry / "disk.json").exists():
            _build_cache_entry(entry)
    facts = json.loads((entry / "disk.json").read_text())["disk"]
    sparse_file(path, facts["size"])
    sparse_copy(entry / "disk.img", path)
    return DebianDisk(**{**facts, "path": path})


def _build_cache_entry(entry: Path) -> None:
    """Build the disk into a temporary folder beside ``entry`` and rename it to ``entry``."""
    absent = missing_packages()
    if absent:
        raise DebianDiskError(
            f"the Debian disk needs: apt-get install --no-install-recommends {' '.join(absent)}"
        )
    work = entry.with_name(f".{entry.name}.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        started = time.monotonic()
        disk = build(work / "disk.img", work)
        facts = {k: v for k, v in asdict(disk).items() if k != "path"}
        record = {"disk": facts, "build_seconds": round(time.monotonic() - started)}
        (work / "disk.json").write_text(json.dumps(record, indent=2) + "\n")
        for scratch in work.iterdir():
            if scratch.name not in ("disk.img", "disk.json"):
                shutil.rmtree(scratch) if scratch.is_dir() else scratch.unlink()
        work.rename(entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(path: Path, work: Path) -> DebianDisk:
    """Build the disk at ``path`` (scratch files in ``work``); see the module docstring."""
    sparse_file(path, DISK_SIZE)
    run(
        [
            *("sgdisk", "-n", "1:2048:4095", "-t", "1:ef02", "-c", "1:BIOS boot"),
            *("-n", f"2:4096:{4096 + ESP_SIZE // SECTOR - 1}", "-t", "2:ef00", "-c", "2:ESP"),
            *("-n", "3:0:0", "-t", "3:8300", "-c", "3:root", str(path)),
        ]
    )
    parts = {p.number: p for p in read_table(str(path)).partitions}
    esp, root = parts[ESP_NUMBER], parts[ROOT_NUMBER]
    root_uuid = str(uuid.uuid4())
    esp_serial = uuid.uuid4().hex[:8].upper()
    esp_uuid = f"{esp_serial[:4]}-{esp_serial[4:]}"
    mnt = work / "root"
    mnt.mkdir()
    dev = loopdev.attach(str(path), partitions=True)
    try:
        run(["mkfs.ext4", "-q", "-L", "root", "-U", root_uuid, f"{dev}p{ROOT_NUMBER}"])
        run(["mount", f"{dev}p{ROOT_NUMBER}", str(mnt)])
        try:
            _install(mnt, dev, root_uuid=root_uuid, esp_uuid=esp_uuid)
            facts = _facts(mnt)
            run(["fstrim", str(mnt)])  # debootstrap's deleted files: holes in the image again
        finally:
            run(["umount", str(mnt)])
        run(["e2fsck", "-fn", f"{dev}p{ROOT_NUMBER}"])
    finally:
        loopdev.detach(dev, partitions=True)
    sparse_copy(_make_esp(esp_serial, work / "esp.img"), path, esp.start)
    disk = DebianDisk(
        path=path,
        size=DISK_SIZE,
        root_uuid=root_uuid,
        esp_uuid=esp_uuid,
        esp_start=esp.start,
        esp_size=esp.size,
        root_start=root.start,
        root_size=root.size,
        **facts,
    )
    _first_boot(disk, work / "first-boot")
    return disk


def _first_boot(disk: DebianDisk, workdir: Path) -> None:
    """Boot the new disk once under SeaBIOS: it installs GRUB for UEFI onto its ESP and must
    report the identity the build gave it."""
    seen = boot_identity([disk.path], "bios", workdir, timeout=900)
    expected = (disk.hostname, disk.machine_id, disk.root_uuid, disk.ssh_fingerprint)
    got = (seen.hostname, seen.machine_id, seen.root_uuid, seen.ssh_fingerprint)
    if got != expected or not seen.boot.powered_off:
        raise DebianDiskError(f"first boot: {got} != {expected}; " + seen.boot.describe())
    listing = run(["mdir", "-b", "-i", disk.esp_image, "::/EFI/debian"], env=MTOOLS)
    if "GRUBX64.EFI" not in listing.stdout.decode().upper():
        raise DebianDiskError("first boot: no EFI/debian/grubx64.efi on the ESP")


def _install(mnt: Path, dev: str, *, root_uuid: str, esp_uuid: str) -> None:
    """Debootstrap onto the mounted root, configure it, install both GRUBs onto ``dev``."""
    (CACHE / "debs").mkdir(exist_ok=True)
    run(
        [
            *("debootstrap", "--variant=minbase", f"--cache-dir={CACHE / 'debs'}"),
            *(f"--include={','.join(PACKAGES)}", SUITE, str(mnt), MIRROR),
        ],
        timeout=1800,
    )
    etc = mnt / "etc"
    (etc / "hostname").write_text(f"{HOSTNAME}\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
    (etc / "fstab").write_text(
        "# <file system> <mount point> <type> <options> <dump> <pass>\n"
        f"UUID={root_uuid}\t/\text4\terrors=remount-ro\t0\t1\n"
        f"UUID={esp_uuid}\t/boot/efi\tvfat\tumask=0077\t0\t1\n"
    )
    (mnt / "boot/efi").mkdir()
    (mnt / NET_RULES).write_text(OLD_NET_RULES)
    (etc / "default/grub").write_text(GRUB_DEFAULTS)
    conf = etc / "initramfs-tools/initramfs.conf"
    conf.write_text(re.sub(r"(?m)^MODULES=.*$", "MODULES=list", conf.read_text()))
    with open(etc / "initramfs-tools/modules", "a") as modules:
        modules.write("virtio_pci\nvirtio_blk\ncrc32c_generic\next4\n")  # ext4: built in or not
    script = mnt / "usr/local/sbin/clonebay-id"
    script.write_text(IDENTITY_SCRIPT)
    script.chmod(0o755)
    (etc / "systemd/system/clonebay-id.service").write_text(IDENTITY_UNIT)
    (etc / "systemd/system/clonebay-grub-efi.service").write_text(GRUB_EFI_UNIT)
    for unit in MASKED:
        (etc / "systemd/system" / unit).unlink(missing_ok=True)
        (etc / "systemd/system" / unit).symlink_to("/dev/null")
    # a machine-id and host keys of this build's own, not debootstrap's
    (etc / "machine-id").unlink()
    (mnt / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    with _chroot(mnt, dev, root_uuid) as chroot:
        chroot(["systemd-machine-id-setup"])
        chroot(["dbus-uuidgen", "--ensure"])  # as dbus's postinst does: a copy of machine-id
        chroot(["ssh-keygen", "-A"])
        chroot(["systemctl", "enable", "clonebay-id.service"])
        chroot(["update-initramfs", "-u", "-k", "all"])
        chroot(["grub-install", "--target=i386-pc", dev])
        chroot(["systemctl", "enable", "clonebay-grub-efi.service"])
        chroot(["update-grub"])
        chroot(["apt-get", "clean"])
    shutil.rmtree(mnt / "var/lib/apt/lists", ignore_errors=True)
    (mnt / "var/lib/apt/lists/partial").mkdir(parents=True)


@contextlib.contextmanager
def _chroot(mnt: Path, dev: str, root_uuid: str) -> Iterator[_Chrooted]:
    """Run commands chrooted in ``mnt`` with /proc, /sys and a private /dev: a tmpfs with the
    usual nodes, ``dev`` and its partitions, and /dev/disk/by-uuid/<root> (update-grub writes
    root=UUID= only when that link exists; the host has no udev to make it)."""
    mounted: list[Path] = []
    try:
        for fstype, where in (("proc", "proc"), ("sysfs", "sys"), ("tmpfs", "dev")):
            run(["mount", "-t", fstype, fstype, str(mnt / where)])
            mounted.append(mnt / where)
        nodes = ["null", "zero", "full", "random", "urandom", "tty", dev.removeprefix("/dev/")]
        nodes += [f"{dev.removeprefix('/dev/')}p{n}" for n in (1, ESP_NUMBER, ROOT_NUMBER)]
        for name in nodes:
            info = os.stat(f"/dev/{name}")
            os.mknod(mnt / "dev" / name, info.st_mode, info.st_rdev)
        (mnt / "dev/disk/by-uuid").mkdir(parents=True)
        (mnt / "dev/disk/by-uuid" / root_uuid).symlink_to(f"../../{nodes[-1]}")
        (mnt / "dev/fd").symlink_to("/proc/self/fd")
        yield _Chrooted(mnt)
    finally:
        for point in reversed(mounted):
            run(["umount", str(point)], check=False)


@dataclass(frozen=True)
class _Chrooted:
    mnt: Path

    def __call__(self, argv: Sequence[str]) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
        run(["chroot", str(self.mnt), *argv], env=env, timeout=600)


def _facts(mnt: Path) -> dict[str, str]:
    """What the installed system's boot must report, read from its files."""
    releases = sorted(p.name for p in (mnt / "usr/lib/modules").iterdir())
    return {
        "hostname": (mnt / "etc/hostname").read_text().strip(),
        "machine_id": (mnt / "etc/machine-id").read_text().strip(),
        "ssh_fingerprint": fingerprint((mnt / ED25519_PUB).read_text().strip()),
        "kernel_release": releases[-1],
    }


def _make_esp(serial: str, out: Path) -> Path:
    """An empty FAT32 image of ESP_SIZE with volume id ``serial`` (GRUB comes at first boot)."""
    sparse_file(out, ESP_SIZE)
    run(["mkfs.vfat", "-F", "32", "-n", "ESP", "-i", serial, str(out)])
    return out


# --- booting ----------------------------------------------------------------------------------

ID_LINE = re.compile(
    r"CLONEBAY-ID hostname=(?P<hostname>\S*) machine-id=(?P<machine_id>\S*) root=(?P<root>\S*)"
    r" rootdev-serial=(?P<serial>\S*) ssh=(?P<ssh>\S*) net-rules=(?P<rules>present|absent)"
    r" boot=(?P<boot>uefi|bios)"
)
# OVMF with a fresh NVRAM found no \EFI\BOOT\BOOTX64.EFI on any disk and starts the last boot
# option it made up, its built-in UEFI shell (which would wait 5 s for startup.nsh, then sit).
OVMF_NO_LOADER = re.compile(r'BdsDxe: loading Boot\w+ "EFI Internal Shell"')
SERIAL_PREFIX = "CLONEBAY-D"  # + the disk's index: the virtio-blk serial of each disk


class BootError(AssertionError):
    """A boot did not reach the CLONEBAY-ID line; the message ends with the serial console."""


@dataclass(frozen=True)
class Boot:
    """One QEMU run: how it ended and what the serial console showed."""

    firmware: str
    seconds: float
    outcome: str  # "exited N" | "timed out" | "stopped: <what matched>"
    log: str
    log_path: Path

    @property
    def powered_off(self) -> bool:
        """The guest powered off (-no-reboot makes a reboot end QEMU with 0 as well)."""
        return self.outcome == "exited 0" and "reboot: Power down" in self.log

    def describe(self, tail: int = 60) -> str:
        """For a failing assertion: the outcome and the end of the serial console."""
        end = "\n".join(self.log.replace("\r", "").split("\n")[-tail:])
        return (
            f"{self.firmware} boot {self.outcome} after {self.seconds:.0f} s; serial console"
            f" ({self.log_path}), last {tail} lines:\n{end}"
        )


@dataclass(frozen=True)
class Identity:
    """What the booted system said about itself in its CLONEBAY-ID line."""

    hostname: str
    machine_id: str
    root_uuid: str
    rootdev_serial: str  # SERIAL_PREFIX + the index in ``disks`` of the disk holding /
    ssh_fingerprint: str  # "none" when there is no ed25519 host key
    net_rules: bool  # /etc/udev/rules.d/70-persistent-net.rules is there
    firmware: str  # "uefi" | "bios", as the guest saw it (/sys/firmware/efi)
    boot: Boot

    @property
    def root_disk(self) -> int:
        """The index in ``disks`` of the disk whose root the system booted."""
        return int(self.rootdev_serial.removeprefix(SERIAL_PREFIX))


def qemu_argv(disks: Sequence[Path], firmware: str, workdir: Path, boot_from: int) -> list[str]:
    """QEMU (q35, TCG, 1 GiB) with ``disks`` as virtio-blk disks, serials CLONEBAY-D0…, the one
    at ``boot_from`` first in the boot order; the serial console on stdout and in serial.log."""
    argv = [
        *("qemu-system-x86_64", "-machine", "q35", *accel(), "-smp", "1", "-m", "1024"),
        *("-display", "none", "-vga", "std", "-nodefaults", "-no-reboot"),
        *("-chardev", f"stdio,id=ser0,signal=off,logfile={workdir / 'serial.log'}"),
        *("-serial", "chardev:ser0"),
    ]
    for index, path in enumerate(disks):
        order = 0 if index == boot_from else index + 1
        argv += _disk_args(index, Disk(path, "virtio", f"{SERIAL_PREFIX}{index}", False, order))
    if firmware == "uefi":  # an NVRAM that has never seen these disks
        vars_copy = workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += [
            *("-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            *("-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"),
        ]
    elif firmware != "bios":
        raise ValueError(f"firmware is bios or uefi, not {firmware!r}")
    return argv


def boot(
    disks: Sequence[Path],
    firmware: str,
    workdir: Path,
    *,
    boot_from: int = 0,
    timeout: float = 300,
    stop: re.Pattern[str] | None = None,
) -> Boot:
    """Boot ``disks`` (read-write) until QEMU exits (the guest powered off), ``stop`` matches a
    serial line (QEMU is killed then) or ``timeout`` seconds pass."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = qemu_argv(disks, firmware, workdir, boot_from)
    output = bytearray()
    outcome = "timed out"
    started = time.monotonic()
    with open(workdir / "qemu.log", "wb") as errors:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - it only calls prctl()
        )
        assert process.stdout is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                while (left := started + timeout - time.monotonic()) > 0:
                    if not selector.select(left):
                        continue
                    chunk = os.read(process.stdout.fileno(), 65536)
                    if not chunk:  # QEMU closed stdout: it is exiting
                        outcome = f"exited {process.wait(timeout=30)}"
                        break
                    output += chunk
                    found = stop.search(output.decode(errors="replace")) if stop else None
                    if found:
                        outcome = f"stopped: {found.group(0)}"
                        break
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            process.stdout.close()
    log = output.decode(errors="replace")
    if not outcome.startswith(("exited 0", "stopped")):
        log += "\n[qemu] " + (workdir / "qemu.log").read_text(errors="replace")
    return Boot(firmware, time.monotonic() - started, outcome, log, workdir / "serial.log")


def boot_identity(
    disks: Sequence[Path], firmware: str, workdir: Path, boot_from: int = 0, timeout: float = 300
) -> Identity:
    """Boot ``disks[boot_from]`` (the others attached too) under ``firmware`` ("bios": SeaBIOS;
    "uefi": OVMF with fresh vars) and parse the CLONEBAY-ID line it prints before it powers off.
    Raises BootError with the end of the serial console when no such line came."""
    result = boot(disks, firmware, workdir, boot_from=boot_from, timeout=timeout, stop=None)
    found = ID_LINE.search(result.log)
    if not found:
        raise BootError("no CLONEBAY-ID line: " + result.describe())
    return Identity(
        hostname=found["hostname"],
        machine_id=found["machine_id"],
        root_uuid=found["root"],
        rootdev_serial=found["serial"],
        ssh_fingerprint=found["ssh"],
        net_rules=found["rules"] == "present",
        firmware=found["boot"],
        boot=result,
    )


# --- reading a disk on the host ---------------------------------------------------------------


def root_file(disk: DebianDisk, rel: str) -> str:
    """The text of file ``rel`` (no leading /) in the disk's ext4, read on the host (debugfs)."""
    image = f"{disk.path}?offset={disk.root_start}"
    return run(["debugfs", "-R", f"cat /{rel}", image]).stdout.decode()
