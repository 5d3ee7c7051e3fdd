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


def test_powers_off(guest: Guest) -> None:
    guest.send("poweroff\n")
    assert guest.wait_exit(timeout=300) == 0
