"""A stick made by ``clonebay make-stick`` (the live ISO and an exFAT images partition after it)
boots as a USB disk, no CD, twice: under SeaBIOS, and under UEFI with Secure Boot enforced (OVMF
with Microsoft's keys enrolled: the hybrid ISO's EFI partition, Debian's signed shim and GRUB,
through the GRUB menu's timeout). Each time the live system comes up on it, sees the images
partition by its label and mounts it with its own kernel (reading a file put there on the host
through exfat-fuse). The UEFI guest then shows that it booted with Secure Boot, lists the stick
as the live medium, and writes an NVRAM entry with the post-copy pass. (One UEFI boot serves the
stick's checks and the Secure Boot ones: a boot under TCG costs 2-3 minutes.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.system.stick import IMAGES_LABEL
from tests.iso.conftest import blank, record_boot
from tests.iso.qemu import OVMF_CODE_SB, Disk, Guest, accel

BOOT_TIMEOUT = 600  # TCG on 2 cores: ~2 min
GIB = 1 << 30
MIB = 1 << 20
NOTE = b"made on the host, read by the live system\n"


@pytest.fixture(scope="module")
def stick(live_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 GiB sparse stick image: make-stick through a loop device, plus one file in the
    images partition (written with exfat-fuse: the host kernel may have no exFAT driver)."""
    work = tmp_path_factory.mktemp("stick")
    image = blank(work / "stick.img", GIB)
    dev = subprocess.check_output(["losetup", "-f", "--show", str(image)], text=True).strip()
    mnt = work / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "clonebay", "make-stick", str(live_iso), dev, "--yes"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        subprocess.run(["mount.exfat-fuse", f"{dev}p3", str(mnt)], check=True)
        try:
            (mnt / "note.txt").write_bytes(NOTE)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
    return image


def _boot(stick: Path, live_iso: Path, work: Path, firmware: str, disks: list[Disk]) -> Guest:
    """QEMU started on the stick as its only boot disk, a USB one (Guest's ``boot="usb"``
    attaches its "ISO" so), up to the serial root shell; timed for the boot-times record."""
    accel(Path(str(live_iso) + ".boot") / "vmlinuz")  # decided on the ISO's kernel, then cached
    vm = Guest(workdir=work, iso=stick, firmware=firmware, boot="usb", disks=disks)
    started = time.monotonic()
    vm.start()
    try:
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        vm.shell(BOOT_TIMEOUT)
        if firmware == "uefi-secure":
            record_boot("UEFI Secure Boot, USB stick", vm, started, BOOT_TIMEOUT)
    except BaseException:
        vm.close()
        raise
    return vm


@pytest.fixture
def bios_guest(
    stick: Path, live_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guest]:
    """The stick under SeaBIOS, for one test (closed before the UEFI guest starts)."""
    vm = _boot(stick, live_iso, tmp_path_factory.mktemp("bios"), "bios", [])
    try:
        yield vm
    finally:
        vm.close()


@pytest.fixture(scope="module")
def uefi_guest(
    stick: Path, live_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guest]:
    """The stick under UEFI with Secure Boot, plus an empty virtio disk for the fixup check."""
    if not OVMF_CODE_SB.exists():
        pytest.skip(f"{OVMF_CODE_SB} missing: apt-get install ovmf")
    work = tmp_path_factory.mktemp("uefi")
    disk = Disk(blank(work / "disk.img", 64 * MIB), "virtio", "UEFI-DISK")
    vm = _boot(stick, live_iso, work, "uefi-secure", [disk])
    try:
        yield vm
    finally:
        vm.close()


def test_the_stick_boots_under_bios_and_offers_its_images_partition(bios_guest: Guest) -> None:
    assert bios_guest.run("test -d /sys/firmware/efi")[0] != 0
    _offers_its_images_partition(bios_guest)


def test_the_stick_boots_under_uefi_and_offers_its_images_partition(uefi_guest: Guest) -> None:
    uefi_guest.check("test -d /sys/firmware/efi")
    _offers_its_images_partition(uefi_guest)


def _offers_its_images_partition(guest: Guest) -> None:
    # the stick (serial CLONEBAY-LIVE) is the live medium, mounted from its ISO partition
    medium = guest.check("findmnt -no SOURCE /run/live/medium")
    listing = json.loads(guest.check("clonebay list --json"))
    disk = next(str(d["path"]) for d in listing if d.get("serial") == "CLONEBAY-LIVE")
    assert medium.startswith(disk), (medium, disk)
    found = guest.check(f"blkid -c /dev/null -o device -t LABEL={IMAGES_LABEL}")
    assert found == f"{disk}3", found
    probe = guest.check(f"blkid -p -o export {found}").splitlines()
    assert "TYPE=exfat" in probe and "PART_ENTRY_NUMBER=3" in probe, probe
    guest.check(f"mount -t exfat -o ro {found} /mnt")
    assert guest.check("cat /mnt/note.txt") == NOTE.decode().strip()
    guest.check("umount /mnt")


def test_booted_by_uefi_with_secure_boot(uefi_guest: Guest) -> None:
    uefi_guest.check("test -d /sys/firmware/efi")
    # SecureBoot-<guid>: 4 bytes of attributes, then 1 when Secure Boot is on.
    value = uefi_guest.check("od -An -tu1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-*")
    assert value.strip() == "1"


def test_the_usb_stick_is_the_live_medium(uefi_guest: Guest) -> None:
    listing = json.loads(uefi_guest.check("clonebay list --json"))
    by_serial = {d["serial"]: d for d in listing}
    assert by_serial["UEFI-DISK"]["transport"] == "virtio"
    stick = by_serial["CLONEBAY-LIVE"]
    assert stick["transport"] == "usb" and stick["live_medium"], stick


def test_fixup_adds_an_nvram_entry_and_reads_it_back(uefi_guest: Guest) -> None:
    """The post-copy pass's --efi-entry on a real UEFI machine (efivars): a disk with an ESP
    whose only loader is \\EFI\\debian\\grubx64.efi gets the fallback loader and an NVRAM
    entry, which efibootmgr lists afterwards with that loader's path."""
    disk = "/dev/disk/by-id/virtio-UEFI-DISK"
    uefi_guest.check(
        f"sgdisk -Z -n 1:2048:0 -t 1:ef00 {disk} && partprobe {disk} && udevadm settle"
    )
    uefi_guest.check(f"mkfs.vfat -F 32 {disk}-part1")
    uefi_guest.check("printf 'MZ-a-loader' > /tmp/grubx64.efi")
    uefi_guest.check(f"mmd -i {disk}-part1 ::/EFI ::/EFI/debian")
    uefi_guest.check(f"mcopy -i {disk}-part1 /tmp/grubx64.efi ::/EFI/debian/")
    before = uefi_guest.check("efibootmgr")
    result = json.loads(
        uefi_guest.check(f"clonebay fixup {disk} --efi-entry --yes --json").splitlines()[-1]
    )
    whats = [c["what"] for c in result["changes"]]
    assert whats == ["efi fallback loader", "efi boot entry"], result
    listed = uefi_guest.check("efibootmgr -v")
    entry = next(line for line in listed.splitlines() if "debian (clonebay)" in line)
    assert "\\EFI\\debian\\grubx64.efi" in entry.replace("/", "\\"), entry
    assert "debian (clonebay)" not in before
    fallback = uefi_guest.check(f"mtype -i {disk}-part1 ::/EFI/BOOT/BOOTX64.EFI 2>/dev/null")
    assert fallback.splitlines()[-1] == "MZ-a-loader", fallback  # mtools may warn first


def test_powers_off(uefi_guest: Guest) -> None:
    uefi_guest.send("poweroff\n")
    assert uefi_guest.wait_exit(timeout=300) == 0
