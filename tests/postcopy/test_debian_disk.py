"""The post-copy test bed itself (debian_disk.py): the Debian disk as built is laid out as
Debian's installer leaves a PC, boots under SeaBIOS and reports the identity read from its own
files on the host; under OVMF with an NVRAM that never saw it, it does not boot (no fallback
loader: the case the post-copy pass fixes), and with \\EFI\\debian\\grubx64.efi copied to
\\EFI\\BOOT\\BOOTX64.EFI it does. Three boots of ~30, ~5 and ~30 s under TCG."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from clonebay.engine.stores.sftp import fingerprint
from clonebay.system.run import run
from tests.postcopy.debian_disk import (
    ED25519_PUB,
    HOSTNAME,
    MTOOLS,
    NET_RULES,
    OVMF_NO_LOADER,
    DebianDisk,
    boot,
    boot_identity,
    root_file,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

Copy = Callable[[Path], DebianDisk]


def _blkid_uuid(path: Path, offset: int) -> str:
    argv = ["blkid", "-p", "-O", str(offset), "-s", "UUID", "-o", "value", str(path)]
    return run(argv).stdout.decode().strip()


def test_disk_is_laid_out_as_debian_leaves_it(debian_disk: DebianDisk) -> None:
    """GPT with BIOS boot, ESP and root; GRUB for UEFI only under \\EFI\\debian; fstab names
    the root and the ESP by the UUIDs blkid reads; the D-Bus machine-id is a copy."""
    table = run(["sgdisk", "-p", str(debian_disk.path)]).stdout.decode()
    codes = re.findall(r"^\s+\d+\s+\d+\s+\d+\s+\S+ \S+\s+(\w{4})", table, re.M)
    assert codes == ["EF02", "EF00", "8300"], table
    listing = run(["mdir", "-/", "-b", "-i", debian_disk.esp_image, "::/"], env=MTOOLS)
    files = listing.stdout.decode().upper().split()
    assert "::/EFI/DEBIAN/GRUBX64.EFI" in files, files
    assert not [f for f in files if f.startswith("::/EFI/BOOT")], files
    root = _blkid_uuid(debian_disk.path, debian_disk.root_start)
    esp = _blkid_uuid(debian_disk.path, debian_disk.esp_start)
    assert (root, esp) == (debian_disk.root_uuid, debian_disk.esp_uuid)
    fstab = root_file(debian_disk, "etc/fstab")
    assert f"UUID={root}\t/\t" in fstab and f"UUID={esp}\t/boot/efi\t" in fstab, fstab
    machine_id = root_file(debian_disk, "etc/machine-id").strip()
    assert machine_id == debian_disk.machine_id
    assert root_file(debian_disk, "var/lib/dbus/machine-id").strip() == machine_id
    assert "127.0.1.1\tsource-host" in root_file(debian_disk, "etc/hosts")
    assert 'NAME="eth0"' in root_file(debian_disk, NET_RULES)


def test_boots_under_bios_and_reports_its_identity(debian_copy: Copy, tmp_path: Path) -> None:
    disk = debian_copy(tmp_path / "disk.img")
    # the truth, read on the host from the image's own files
    machine_id = root_file(disk, "etc/machine-id").strip()
    ssh = fingerprint(root_file(disk, ED25519_PUB).strip())
    seen = boot_identity([disk.path], "bios", tmp_path / "bios")
    print(f"BIOS boot to CLONEBAY-ID and power-off: {seen.boot.seconds:.1f} s")
    assert seen.hostname == HOSTNAME == root_file(disk, "etc/hostname").strip()
    assert seen.machine_id == machine_id
    assert seen.ssh_fingerprint == ssh
    assert seen.root_uuid == disk.root_uuid
    assert (seen.rootdev_serial, seen.root_disk) == ("CLONEBAY-D0", 0)
    assert seen.net_rules
    assert seen.firmware == "bios"
    assert seen.boot.powered_off, seen.boot.describe()


def test_does_not_boot_under_uefi_with_fresh_nvram(debian_copy: Copy, tmp_path: Path) -> None:
    """OVMF with new vars knows only \\EFI\\BOOT\\BOOTX64.EFI; the disk has none, so OVMF
    fails the disk's boot option and falls to its built-in shell (where the boot is stopped)."""
    disk = debian_copy(tmp_path / "disk.img")
    result = boot([disk.path], "uefi", tmp_path / "uefi", timeout=120, stop=OVMF_NO_LOADER)
    print(f"OVMF gave up on the disk after {result.seconds:.1f} s")
    assert result.outcome.startswith("stopped"), result.describe()
    assert 'failed to load Boot0001 "UEFI Misc Device"' in result.log, result.describe()
    assert "CLONEBAY-ID" not in result.log


def test_boots_under_uefi_with_a_fallback_loader(debian_copy: Copy, tmp_path: Path) -> None:
    """grubx64.efi copied to \\EFI\\BOOT\\BOOTX64.EFI is all OVMF with fresh vars needs: its
    prefix is "(,gpt3)/boot/grub", the root partition of the disk it was loaded from."""
    disk = debian_copy(tmp_path / "disk.img")
    grub = tmp_path / "grubx64.efi"
    run(["mcopy", "-i", disk.esp_image, "::/EFI/debian/grubx64.efi", str(grub)], env=MTOOLS)
    run(["mmd", "-i", disk.esp_image, "::/EFI/BOOT"], env=MTOOLS)
    run(["mcopy", "-i", disk.esp_image, str(grub), "::/EFI/BOOT/BOOTX64.EFI"], env=MTOOLS)
    seen = boot_identity([disk.path], "uefi", tmp_path / "uefi")
    print(f"UEFI boot to CLONEBAY-ID and power-off: {seen.boot.seconds:.1f} s")
    assert (seen.hostname, seen.machine_id) == (HOSTNAME, disk.machine_id)
    assert (seen.root_uuid, seen.root_disk) == (disk.root_uuid, 0)
    assert seen.firmware == "uefi"
    assert seen.boot.powered_off, seen.boot.describe()
