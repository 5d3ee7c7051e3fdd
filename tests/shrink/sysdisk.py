"""A small Debian system disk that boots under both SeaBIOS and OVMF, to prove that a disk shrunk
onto a smaller one still boots (tests/shrink/test_shrink_boot.py).

The disk (a sparse image file, GPT, 1.5 GiB) is what an installer would leave on a PC that boots
either way:

* p1, 1 MiB, BIOS boot (ef02): GRUB's core.img, written there by ``grub-install
  --target=i386-pc``, which also puts GRUB's boot code into the protective MBR with the sector
  number of core.img in it. core.img finds the root by its filesystem UUID and reads its
  modules and grub.cfg from /boot/grub there.
* p2, 100 MiB, ESP (FAT32, ef00): EFI/BOOT/BOOTX64.EFI, the removable-media path OVMF boots with
  an empty NVRAM: a standalone GRUB (``grub-mkstandalone``, its modules inside it) whose embedded
  config finds the root by filesystem UUID and loads the same grub.cfg. The FAT is made in a
  file of its own and filled with mtools (the host kernel has no vfat driver), then copied in.
* p3, the rest, ext4 root: Debian's kernel (/boot/vmlinuz), a small initramfs, grub.cfg, a
  check script (/sbin/clonebay-check), a payload of pseudo-random bytes and the SHA256SUMS of
  the payload, the kernel and the initramfs (/srv/clonebay). The ext4 is large and nearly empty
  so that a clone can shrink it to about half; and every file was written while a filler
  (allocated by debugfs, unwritten: the image stays sparse) held all but the last 128 MiB, so
  the files lie at the far end of the ext4: resize2fs has to move them (GRUB's modules, the
  kernel, the initramfs, the payload), and both GRUBs and Linux read them from their new places.

The boot: GRUB (timeout 0, output also on the serial port) loads the kernel and initramfs with
``root=UUID=… console=ttyS0 panic=-1``; when that fails (a file GRUB cannot read), its fallback
entry prints CLONEBAY-GRUB-FAIL and halts. The initramfs (busybox-static and the Debian kernel's
modules for a virtio disk and ext4, loaded by insmod in dependency order) mounts the root found
by that UUID read-only, runs /sbin/clonebay-check from it — which checks SHA256SUMS and prints
``CLONEBAY-BOOT-OK <UUID read from the ext4 superblock> <sha256 of the payload>`` — and powers
off, so QEMU exits. Any failure prints a CLONEBAY-INIT-FAIL or CLONEBAY-BOOT-BAD line and powers
off too; a kernel panic reboots at once, which ``-no-reboot`` turns into QEMU's exit. Only a
GRUB that cannot find its own files (its rescue prompt) waits until the boot's timeout.

The kernel comes from the apt archive (the package linux-image-amd64 depends on), downloaded
and unpacked once into /var/tmp/clonebay-sysdisk-cache (``$CLONEBAY_SYSDISK_CACHE``): only the
vmlinuz and the handful of modules the initramfs needs are kept. Host packages needed besides
the project's: grub2-common (grub-install), grub-pc-bin, grub-efi-amd64-bin, busybox-static,
qemu-system-x86 and ovmf (to boot it).
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from clonebay.system import loopdev
from clonebay.system.parttable import read_table
from clonebay.system.run import run
from clonebay.testdisks.files import sparse_copy, sparse_file
from tests.iso.qemu import OVMF_CODE, OVMF_VARS

MIB = 1 << 20
SECTOR = 512
BLOCK = 4096  # the ext4's block size
DISK_SIZE = 1536 * MIB
ESP_SIZE = 100 * MIB
ROOT_NUMBER = 3
PAYLOAD_SIZE = 8 * MIB
TAIL = 128 * MIB  # what the filler leaves free at the end of the ext4, for the files
MARKER = "CLONEBAY-BOOT-OK"
CACHE = Path(os.environ.get("CLONEBAY_SYSDISK_CACHE", "/var/tmp/clonebay-sysdisk-cache"))
# The initramfs' modules (their dependencies are added from modules.dep): the virtio PCI
# transport and block driver for the disk, ext4 and the crc32c its checksums need (ext4 asks
# the crypto API for it, which would run a modprobe the initramfs does not have).
MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
# Files the check script verifies (paths in the root); the payload's hash is in the marker.
CHECKED = ("boot/vmlinuz", "boot/initrd.img", "srv/clonebay/payload.bin")

# program -> Debian package, checked up front so that a missing one is named with its package
HOST_TOOLS = {
    "grub-install": "grub2-common",
    "grub-mkstandalone": "grub-common",
    "busybox": "busybox-static",
    "sgdisk": "gdisk",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
}
GRUB_PLATFORMS = {"i386-pc": "grub-pc-bin", "x86_64-efi": "grub-efi-amd64-bin"}

INIT = r"""#!/bin/busybox sh
# The clonebay test system's initramfs: load the modules for a virtio disk and ext4, mount the
# root named on the kernel command line by its filesystem UUID (read-only), run the root's own
# /sbin/clonebay-check, power off.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
    echo "CLONEBAY-INIT-FAIL: $*"
    cat /proc/partitions
    poweroff -f
}
while read -r module; do
    insmod "/lib/modules/$module.ko" || fail "insmod $module"
done < /lib/modules/load-order
uuid=
for arg in $(cat /proc/cmdline); do
    case "$arg" in root=UUID=*) uuid="${arg#root=UUID=}" ;; esac
done
[ -n "$uuid" ] || fail "no root=UUID= on the kernel command line"
tries=0
until dev=$(findfs "UUID=$uuid" 2>/dev/null); do
    tries=$((tries + 1))
    [ "$tries" -lt 300 ] || fail "no filesystem with UUID $uuid"
    usleep 100000
done
mount -t ext4 -o ro "$dev" /newroot || fail "cannot mount $dev"
dmesg -n 1
sh /newroot/sbin/clonebay-check /newroot "$dev" || fail "clonebay-check exited $?"
umount /newroot
poweroff -f
"""

CHECK = r"""#!/bin/sh
# The clonebay test system's check, on its root filesystem: run by the initramfs with the
# mounted root ($1) and its device ($2). Verifies the files in srv/clonebay/SHA256SUMS and
# prints CLONEBAY-BOOT-OK, the UUID read from the ext4 superblock (bytes 1128-1143 of the
# device) and the sha256 of the payload.
root="$1"
dev="$2"
hex=$(xxd -p -s 1128 -l 16 "$dev")
uuid=$(echo "$hex" | sed 's/^\(.\{8\}\)\(.\{4\}\)\(.\{4\}\)\(.\{4\}\)\(.\{12\}\)$/\1-\2-\3-\4-\5/')
cd "$root" || exit 1
if ! sha256sum -c srv/clonebay/SHA256SUMS; then
    echo "CLONEBAY-BOOT-BAD $uuid: files differ from SHA256SUMS"
    exit 1
fi
payload=$(sha256sum srv/clonebay/payload.bin | cut -d' ' -f1)
echo "CLONEBAY-BOOT-OK $uuid $payload"
"""

GRUB_CFG = """\
# The clonebay test system. Both GRUBs read this file: the BIOS one (core.img in the BIOS boot
# partition) as its prefix's grub.cfg, the UEFI one (ESP, EFI/BOOT/BOOTX64.EFI) through the
# configfile in its embedded config; both find this filesystem by its UUID.
set timeout=0
set default=0
set fallback=1
if [ "$grub_platform" = pc ]; then
    # OVMF copies its console to the serial port itself; the BIOS GRUB has to be told to.
    serial --unit=0 --speed=115200
    terminal_input console serial
    terminal_output console serial
else
    insmod all_video  # else Linux's EFI loader says "no suitable video mode found"
fi
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
echo "clonebay-grub: $grub_platform, root $root"
menuentry "clonebay test system" {{
    linux /boot/vmlinuz root=UUID={uuid} ro console=ttyS0,115200 panic=-1
    initrd /boot/initrd.img
}}
menuentry "power off: the system did not boot" {{
    echo "CLONEBAY-GRUB-FAIL: the system's entry failed"
    halt
}}
"""

EFI_EMBEDDED_CFG = """\
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
configfile ($root)/boot/grub/grub.cfg
"""


class SystemDiskError(RuntimeError):
    """The system disk cannot be built here (a missing package, no kernel in the archive)."""


@dataclass(frozen=True)
class Kernel:
    """Debian's kernel as the system disk needs it: the vmlinuz and the initramfs' modules."""

    release: str
    vmlinuz: Path
    modules: tuple[Path, ...]  # in load order


@dataclass(frozen=True)
class SystemDisk:
    """A built system disk and what its boot must show."""

    path: Path
    size: int
    root_uuid: str
    payload_sha256: str
    kernel_release: str
    root_start: int  # byte offset of the ext4 partition
    root_size: int
    files_floor: int  # lowest byte (in the ext4) of any block of the checked files

    @property
    def marker(self) -> str:
        """The line a good boot prints on the serial console."""
        return f"{MARKER} {self.root_uuid} {self.payload_sha256}"


@dataclass(frozen=True)
class Boot:
    """One QEMU boot of a disk: how long it took and what the serial console showed."""

    firmware: str
    seconds: float
    returncode: int | None  # None: killed at the timeout
    log: str
    log_path: Path

    def lines(self) -> list[str]:
        return self.log.replace("\r", "").split("\n")

    def describe(self, tail: int = 60) -> str:
        """For a failing assertion: the outcome and the end of the serial console."""
        outcome = "timed out" if self.returncode is None else f"exited {self.returncode}"
        end = "\n".join(self.lines()[-tail:])
        return (
            f"{self.firmware} boot {outcome} after {self.seconds:.0f} s; serial console"
            f" ({self.log_path}), last {tail} lines:\n{end}"
        )


# --- host checks --------------------------------------------------------------------------------


def missing_packages() -> list[str]:
    """Debian packages the build needs that are not installed (empty when all are)."""
    absent = {pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None}
    for platform, pkg in GRUB_PLATFORMS.items():
        if not Path("/usr/lib/grub", platform).is_dir():
            absent.add(pkg)
    busybox = shutil.which("busybox")
    if busybox and not _static(Path(busybox)):
        absent.add("busybox-static")  # busybox (dynamic) is useless in an initramfs
    return sorted(absent)


def _static(path: Path) -> bool:
    """Whether an x86-64 ELF executable has no program interpreter (PT_INTERP)."""
    with open(path, "rb") as f:
        head = f.read(64)
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != 3  # PT_INTERP
        for i in range(phnum)
    )


# --- the kernel ---------------------------------------------------------------------------------


def kernel_package() -> str:
    """The kernel package linux-image-amd64 depends on (e.g. linux-image-6.1.0-57-amd64)."""
    out = run(["apt-cache", "depends", "linux-image-amd64"], check=False).stdout.decode()
    names = re.findall(r"Depends: (linux-image-\d\S*-amd64)\s", out + "\n")
    if names:
        return str(names[0])
    cached = sorted(p.name for p in CACHE.glob("linux-image-*") if (p / "ready").exists())
    if cached:
        return cached[-1]  # apt knows none (no lists): the newest one fetched before
    raise SystemDiskError("apt offers no linux-image-amd64 (run apt-get update)")


def debian_kernel() -> Kernel:
    """Debian's current amd64 kernel, fetched into the cache the first time."""
    package = kernel_package()
    folder = CACHE / package
    if not (folder / "ready").exists():
        _fetch_kernel(package, folder)
    names = (folder / "modules" / "load-order").read_text().split()
    return Kernel(
        (folder / "release").read_text().strip(),
        folder / "vmlinuz",
        tuple(folder / "modules" / f"{name}.ko" for name in names),
    )


def _fetch_kernel(package: str, folder: Path) -> None:
    """Download ``package``, keep its vmlinuz and the initramfs' modules in ``folder``."""
    work = folder.with_name(f".{package}.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        # apt-get download writes into the current folder; the sandbox user cannot write here.
        fetch = 'cd "$1" && exec apt-get -q -o APT::Sandbox::User=root download "$2"'
        run(["sh", "-c", fetch, "sh", str(work), package], timeout=900)
        deb = next(work.glob("*.deb"))
        tree = work / "tree"
        run(["dpkg-deb", "-x", str(deb), str(tree)])
        deb.unlink()
        moddir = next(d for d in (tree / "lib/modules", tree / "usr/lib/modules") if d.is_dir())
        release = next(moddir.iterdir()).name
        run(["depmod", "-b", str(moddir.parent.parent), release])
        order = _load_order(moddir / release)
        (work / "modules").mkdir()
        for name, relpath in order:
            shutil.copyfile(moddir / release / relpath, work / "modules" / f"{name}.ko")
        (work / "modules" / "load-order").write_text("".join(f"{n}\n" for n, _ in order))
        shutil.copyfile(tree / "boot" / f"vmlinuz-{release}", work / "vmlinuz")
        (work / "release").write_text(release + "\n")
        shutil.rmtree(tree)
        (work / "ready").touch()
        try:
            work.rename(folder)
        except OSError:  # another run got there first
            if not (folder / "ready").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load_order(moddir: Path) -> list[tuple[str, str]]:
    """(name, path in the module folder) of MODULES and their dependencies, each after what it
    depends on (modules.dep lists a module's whole dependency closure)."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.removesuffix(".ko").replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps[path]:
            visit(dep)
        order.append(path)

    for name in MODULES:
        if name not in by_name:
            raise SystemDiskError(f"the kernel has no module {name} (built in?)")
        visit(by_name[name])
    return [(Path(p).name.removesuffix(".ko"), p) for p in order]


# --- the initramfs ------------------------------------------------------------------------------


def _cpio(members: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks: (name, mode, data, (rdev major,
    minor)) per member, inode numbers in order, owner root, mtime 0."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate([*members, ("TRAILER!!!", 0, b"", (0, 0))]):
        nlink = 2 if mode & 0o040000 else 1
        fields = (ino + 1, mode, 0, 0, nlink, 0, len(data), 0, 0, *rdev, len(name) + 1, 0)
        out += b"070701" + b"".join(b"%08x" % v for v in fields) + name.encode() + b"\0"
        out += b"\0" * (-len(out) % 4)
        out += data + b"\0" * (-len(data) % 4)
    return bytes(out)


def make_initramfs(kernel: Kernel, out: Path) -> Path:
    """The gzipped initramfs: busybox-static, /init, the modules and their load order."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    folders = ("bin", "dev", "lib", "lib/modules", "proc", "sys", "newroot")
    order = "".join(f"{m.stem}\n" for m in kernel.modules)
    members = [(d, 0o040755, b"", (0, 0)) for d in folders]
    members += [
        ("dev/console", 0o020600, b"", (5, 1)),
        ("bin/busybox", 0o100755, Path(busybox).read_bytes(), (0, 0)),
        ("init", 0o100755, INIT.encode(), (0, 0)),
        ("lib/modules/load-order", 0o100644, order.encode(), (0, 0)),
    ]
    members += [(f"lib/modules/{m.name}", 0o100644, m.read_bytes(), (0, 0)) for m in kernel.modules]
    out.write_bytes(gzip.compress(_cpio(members), mtime=0))
    return out


# --- GRUB and the ESP ---------------------------------------------------------------------------


def make_esp(root_uuid: str, work: Path) -> Path:
    """The ESP as a FAT32 image: EFI/BOOT/BOOTX64.EFI, a standalone GRUB that loads the root's
    grub.cfg (found by UUID)."""
    embedded = work / "efi-embedded.cfg"
    embedded.write_text(EFI_EMBEDDED_CFG.format(uuid=root_uuid))
    efi = work / "BOOTX64.EFI"
    run(
        [
            *("grub-mkstandalone", "--format=x86_64-efi", f"--output={efi}"),
            *("--locales=", "--fonts=", "--themes=", "--modules=part_gpt ext2 search_fs_uuid"),
            f"boot/grub/grub.cfg={embedded}",
        ]
    )
    esp = sparse_file(work / "esp.img", ESP_SIZE)
    run(["mkfs.vfat", "-F", "32", "-n", "ESP", str(esp)])
    mtools = {"MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], env=mtools)
    run(["mcopy", "-i", str(esp), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], env=mtools)
    return esp


# --- the disk -----------------------------------------------------------------------------------


def build(path: Path, work: Path) -> SystemDisk:
    """Build the system disk at ``path`` (scratch files in ``work``); see the module docstring."""
    absent = missing_packages()
    if absent:
        raise SystemDiskError(
            f"the system disk needs: apt-get install --no-install-recommends {' '.join(absent)}"
        )
    kernel = debian_kernel()
    root_uuid = str(uuid.uuid4())
    initrd = make_initramfs(kernel, work / "initrd.img")
    esp = make_esp(root_uuid, work)

    sparse_file(path, DISK_SIZE)
    run(
        [
            *("sgdisk", "-n", "1:2048:4095", "-t", "1:ef02", "-c", "1:BIOS boot"),
            *("-n", f"2:4096:{4096 + ESP_SIZE // SECTOR - 1}", "-t", "2:ef00", "-c", "2:ESP"),
            *("-n", "3:0:0", "-t", "3:8300", "-c", "3:root", str(path)),
        ]
    )
    parts = {p.number: p for p in read_table(str(path)).partitions}
    sparse_copy(esp, path, parts[2].start)
    root = parts[ROOT_NUMBER]
    root_img = sparse_file(work / "root.img", root.size)
    run(
        [
            *("mkfs.ext4", "-F", "-q", "-b", str(BLOCK), "-L", "clonebay-root", "-U", root_uuid),
            *("-E", "lazy_itable_init=0,lazy_journal_init=0", str(root_img)),
        ]
    )
    _hold_low_blocks(root_img)
    sparse_copy(root_img, path, root.start)
    root_img.unlink()

    payload = random.Random(16).randbytes(PAYLOAD_SIZE)
    mnt = work / "root"
    mnt.mkdir()
    dev = loopdev.attach(str(path), partitions=True)
    try:
        part_dev = f"{dev}p{ROOT_NUMBER}"
        run(["mount", part_dev, str(mnt)])
        try:
            _fill_root(mnt, dev, kernel=kernel, initrd=initrd, payload=payload, root_uuid=root_uuid)
        finally:
            run(["umount", str(mnt)])
        run(["e2fsck", "-fn", part_dev])  # the filler's blocks are all free again
        floor = min(_lowest_block(part_dev, f"/{name}") for name in CHECKED) * BLOCK
    finally:
        loopdev.detach(dev, partitions=True)
    if floor < root.size - 2 * TAIL:
        raise SystemDiskError(f"the files start at {floor} of the ext4's {root.size} bytes")
    return SystemDisk(
        path=path,
        size=DISK_SIZE,
        root_uuid=root_uuid,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        kernel_release=kernel.release,
        root_start=root.start,
        root_size=root.size,
        files_floor=floor,
    )


def _hold_low_blocks(image: Path) -> None:
    """Allocate all the free blocks of the new ext4 in ``image`` but the last TAIL bytes' to
    /filler (unwritten extents: no data, the image stays sparse), so that the files written next
    land at the far end. debugfs allocates from the start upwards; the kernel's allocator would
    wrap around from where it starts and leave its free space anywhere."""
    head = run(["dumpe2fs", "-h", str(image)]).stdout.decode()
    found = re.search(r"^Free blocks:\s+(\d+)", head, re.MULTILINE)
    assert found, head
    held = int(found.group(1)) - TAIL // BLOCK
    script = f"write /dev/null filler\nfallocate /filler 0 {held - 1}\n"
    run(["debugfs", "-w", "-f", "-", str(image)], input_bytes=script.encode())


def _fill_root(
    mnt: Path, disk_dev: str, *, kernel: Kernel, initrd: Path, payload: bytes, root_uuid: str
) -> None:
    """Everything on the mounted root (at its far end: the filler holds the rest until it is
    deleted at the end), and GRUB installed for BIOS boot onto the disk ``disk_dev``."""
    for folder in ("boot/grub", "sbin", "srv/clonebay", "dev", "proc", "sys", "tmp"):
        (mnt / folder).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel.vmlinuz, mnt / "boot/vmlinuz")
    shutil.copyfile(initrd, mnt / "boot/initrd.img")
    (mnt / "srv/clonebay/payload.bin").write_bytes(payload)
    sums = "".join(f"{_sha256(mnt / name)}  {name}\n" for name in CHECKED)
    (mnt / "srv/clonebay/SHA256SUMS").write_text(sums)
    check = mnt / "sbin/clonebay-check"
    check.write_text(CHECK)
    check.chmod(0o755)
    (mnt / "boot/grub/grub.cfg").write_text(GRUB_CFG.format(uuid=root_uuid))
    run(
        [
            *("grub-install", "--target=i386-pc", f"--boot-directory={mnt / 'boot'}"),
            *("--modules=part_gpt ext2", "--locales=", "--fonts=", "--themes=", disk_dev),
        ]
    )
    os.sync()  # delayed allocation: the blocks are chosen now, while the filler is there
    (mnt / "filler").unlink()
    os.sync()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lowest_block(device: str, name: str) -> int:
    """The lowest data block of file ``name`` in the ext4 on ``device`` (debugfs)."""
    out = run(["debugfs", "-R", f"blocks {name}", device]).stdout.decode()
    blocks = [int(b) for b in out.split()]
    assert blocks, f"debugfs shows no blocks for {name}"
    return min(blocks)


# --- booting ------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In QEMU's process before exec: SIGKILL when the test process dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def accel() -> list[str]:
    """TCG, unless ``CLONEBAY_QEMU_ACCEL=kvm`` says KVM works here."""
    if os.environ.get("CLONEBAY_QEMU_ACCEL") == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg", "-cpu", "max"]


def boot(disk: Path, firmware: str, workdir: Path, timeout: float = 300) -> Boot:
    """Boot ``disk`` (read-only, virtio) in QEMU with SeaBIOS (``bios``) or OVMF (``uefi``) until
    the guest powers off or ``timeout`` seconds pass; the serial console goes to a file."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "serial.log"
    argv = [
        *("qemu-system-x86_64", "-machine", "q35", *accel(), "-smp", "1", "-m", "512"),
        *("-display", "none", "-vga", "std", "-nodefaults", "-no-reboot"),
        *("-chardev", f"file,id=ser0,path={log}", "-serial", "chardev:ser0"),
        *("-drive", f"file={disk},if=virtio,format=raw,readonly=on"),
    ]
    if firmware == "uefi":
        vars_copy = workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += [
            *("-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            *("-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"),
        ]
    elif firmware != "bios":
        raise ValueError(firmware)
    started = time.monotonic()
    with open(workdir / "qemu.log", "wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - it only calls prctl()
        )
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
    seconds = time.monotonic() - started
    text = log.read_bytes().decode(errors="replace") if log.exists() else ""
    if code not in (0, None):
        text += "\n[qemu] " + (workdir / "qemu.log").read_text(errors="replace")
    return Boot(firmware, seconds, code, text, log)
