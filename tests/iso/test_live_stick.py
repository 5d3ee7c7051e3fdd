"""A stick made by ``clonebay make-stick`` (the live ISO and an exFAT images partition after it)
boots as a USB disk, no CD, under UEFI with Secure Boot enforced (OVMF with Microsoft's keys
enrolled: the hybrid ISO's EFI partition, Debian's signed shim and GRUB, through the GRUB menu's
timeout). The live system comes up on it, sees the images partition by its label and mounts it
with its own kernel (reading a file put there on the host through exfat-fuse); it shows that it
booted with Secure Boot, lists the stick as the live medium, and writes an NVRAM entry with the
post-copy pass. The same stick under SeaBIOS is booted by the stores guest
(test_live_stores.py), which also saves into its images partition: a boot under TCG costs 1-2
minutes, so each guest serves as many checks as it can."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.iso.conftest import blank, record_boot
from tests.iso.live_stick import offers_its_images_partition
from tests.iso.qemu import OVMF_CODE_SB, Disk, Guest

BOOT_TIMEOUT = 600  # TCG on 2 cores: ~2 min
MIB = 1 << 20


@pytest.fixture(scope="module")
def uefi_guest(live_stick: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """QEMU started on the stick as its only boot disk, a USB one (Guest's ``boot="usb"``
    attaches its "ISO" so), under UEFI with Secure Boot, plus an empty virtio disk for the
    fixup check; up to the serial root shell, timed for the boot-times record."""
    if not OVMF_CODE_SB.exists():
        pytest.skip(f"{OVMF_CODE_SB} missing: apt-get install ovmf")
    work = tmp_path_factory.mktemp("uefi")
    disk = Disk(blank(work / "disk.img", 64 * MIB), "virtio", "UEFI-DISK")
    vm = Guest(workdir=work, iso=live_stick, firmware="uefi-secure", boot="usb", disks=[disk])
    started = time.monotonic()
    vm.start()
    try:
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        vm.shell(BOOT_TIMEOUT)
        record_boot("UEFI Secure Boot, USB stick", vm, started, BOOT_TIMEOUT)
        yield vm
    finally:
        vm.close()


def test_the_stick_boots_under_uefi_and_offers_its_images_partition(uefi_guest: Guest) -> None:
    uefi_guest.check("test -d /sys/firmware/efi")
    offers_its_images_partition(uefi_guest)


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
