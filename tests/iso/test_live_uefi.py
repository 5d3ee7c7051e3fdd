"""The live ISO under UEFI with Secure Boot enforced (OVMF with Microsoft's keys enrolled), booted
as a USB stick (the hybrid ISO's EFI partition, Debian's signed shim and GRUB) through the GRUB
menu's timeout: the system comes up, knows it booted by UEFI with Secure Boot, lists the disks
and marks the stick as the live medium."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.iso.conftest import blank, record_boot
from tests.iso.qemu import OVMF_CODE_SB, Disk, Guest

BOOT_TIMEOUT = 600
MIB = 1 << 20


@pytest.fixture(scope="module")
def guest(live_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    if not OVMF_CODE_SB.exists():
        pytest.skip(f"{OVMF_CODE_SB} missing: apt-get install ovmf")
    work = tmp_path_factory.mktemp("uefi")
    vm = Guest(
        workdir=work,
        iso=live_iso,
        firmware="uefi-secure",
        boot="usb",
        disks=[Disk(blank(work / "disk.img", 64 * MIB), "virtio", "UEFI-DISK")],
    )
    started = time.monotonic()
    vm.start()
    try:
        vm.shell(BOOT_TIMEOUT)
        record_boot("UEFI Secure Boot, USB", vm, started, BOOT_TIMEOUT)
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        yield vm
    finally:
        vm.close()


def test_booted_by_uefi_with_secure_boot(guest: Guest) -> None:
    guest.check("test -d /sys/firmware/efi")
    # SecureBoot-<guid>: 4 bytes of attributes, then 1 when Secure Boot is on.
    value = guest.check("od -An -tu1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-*")
    assert value.strip() == "1"


def test_the_usb_stick_is_the_live_medium(guest: Guest) -> None:
    listing = json.loads(guest.check("clonebay list --json"))
    by_serial = {d["serial"]: d for d in listing}
    assert by_serial["UEFI-DISK"]["transport"] == "virtio"
    stick = by_serial["CLONEBAY-LIVE"]
    assert stick["transport"] == "usb" and stick["live_medium"], stick


def test_fixup_adds_an_nvram_entry_and_reads_it_back(guest: Guest) -> None:
    """The post-copy pass's --efi-entry on a real UEFI machine (efivars): a disk with an ESP
    whose only loader is \\EFI\\debian\\grubx64.efi gets the fallback loader and an NVRAM
    entry, which efibootmgr lists afterwards with that loader's path."""
    disk = "/dev/disk/by-id/virtio-UEFI-DISK"
    guest.check(f"sgdisk -Z -n 1:2048:0 -t 1:ef00 {disk} && partprobe {disk} && udevadm settle")
    guest.check(f"mkfs.vfat -F 32 {disk}-part1")
    guest.check("printf 'MZ-a-loader' > /tmp/grubx64.efi")
    guest.check(f"mmd -i {disk}-part1 ::/EFI ::/EFI/debian")
    guest.check(f"mcopy -i {disk}-part1 /tmp/grubx64.efi ::/EFI/debian/")
    before = guest.check("efibootmgr")
    result = json.loads(
        guest.check(f"clonebay fixup {disk} --efi-entry --yes --json").splitlines()[-1]
    )
    whats = [c["what"] for c in result["changes"]]
    assert whats == ["efi fallback loader", "efi boot entry"], result
    listed = guest.check("efibootmgr -v")
    entry = next(line for line in listed.splitlines() if "debian (clonebay)" in line)
    assert "\\EFI\\debian\\grubx64.efi" in entry.replace("/", "\\"), entry
    assert "debian (clonebay)" not in before
    fallback = guest.check(f"mtype -i {disk}-part1 ::/EFI/BOOT/BOOTX64.EFI 2>/dev/null")
    assert fallback.splitlines()[-1] == "MZ-a-loader", fallback  # mtools may warn first


def test_powers_off(guest: Guest) -> None:
    guest.send("poweroff\n")
    assert guest.wait_exit(timeout=300) == 0
