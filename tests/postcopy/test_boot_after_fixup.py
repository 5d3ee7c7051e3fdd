"""The post-copy pass proved by booting: the real Debian disk (debian_disk.py: GRUB for BIOS,
GRUB for UEFI only at \\EFI\\debian) is cloned from the command line as a technician would,
then booted in QEMU under TCG.

- ``--hostname clone-01``: under SeaBIOS and under OVMF with an NVRAM that never saw the disk
  (it must boot through the fallback loader the pass added), the clone reports the new host
  name, a machine-id other than the source's (made by systemd at its first boot), new SSH host
  keys, and no persistent net rules.
- ``--new-ids``: source and clone attached to one guest, each booted in turn, each mounts its
  own root (by the UUID each now has: GRUB reinstalled in a chroot, grub.cfg and fstab follow).

Four boots of ~25-30 s each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clonebay.system.run import run
from tests.edgedisks import clonebay, sha256
from tests.postcopy.debian_disk import DebianDisk, boot_identity

pytestmark = [pytest.mark.root, pytest.mark.slow]

Copy = Callable[[Path], DebianDisk]


def blkid_uuid(path: Path, offset: int) -> str:
    argv = ["blkid", "-p", "-O", str(offset), "-s", "UUID", "-o", "value", str(path)]
    return run(argv).stdout.decode().strip()


@pytest.fixture(scope="module")
def source(debian_copy: Copy, tmp_path_factory: pytest.TempPathFactory) -> DebianDisk:
    return debian_copy(tmp_path_factory.mktemp("boot-after") / "source.img")


def test_a_renamed_clone_boots_under_bios_and_fresh_uefi_as_a_new_machine(
    source: DebianDisk, tmp_path: Path
) -> None:
    before = sha256(source.path)
    clone = tmp_path / "clone.img"
    proc = clonebay("clone", str(source.path), str(clone), "--hostname", "clone-01", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "efi fallback loader: (none) -> \\EFI\\BOOT\\BOOTX64.EFI" in proc.stdout
    assert sha256(source.path) == before  # the source is never written
    bios = boot_identity([clone], "bios", tmp_path / "bios")
    assert bios.hostname == "clone-01"
    assert bios.machine_id and bios.machine_id != source.machine_id
    assert bios.ssh_fingerprint not in {"none", source.ssh_fingerprint}
    assert not bios.net_rules
    assert (bios.firmware, bios.root_uuid) == ("bios", source.root_uuid)
    uefi = boot_identity([clone], "uefi", tmp_path / "uefi")  # fresh NVRAM: the fallback path
    assert uefi.firmware == "uefi"
    assert uefi.hostname == "clone-01"
    assert uefi.machine_id == bios.machine_id  # made once, at the first boot, and kept
    assert uefi.ssh_fingerprint == bios.ssh_fingerprint


def test_with_new_ids_source_and_clone_in_one_machine_each_boot_their_own_root(
    source: DebianDisk, debian_copy: Copy, tmp_path: Path
) -> None:
    clone = tmp_path / "clone.img"
    proc = clonebay("clone", str(source.path), str(clone), "--new-ids", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "grub boot code (BIOS)" in proc.stdout
    new_root = blkid_uuid(clone, source.root_start)
    assert new_root and new_root != source.root_uuid
    assert blkid_uuid(clone, source.esp_start) != source.esp_uuid
    original = debian_copy(tmp_path / "original.img")  # a copy of the source to boot
    disks = [original.path, clone]
    from_clone = boot_identity(disks, "bios", tmp_path / "clone-boot", boot_from=1)
    assert (from_clone.rootdev_serial, from_clone.root_uuid) == ("CLONEBAY-D1", new_root)
    from_source = boot_identity(disks, "bios", tmp_path / "source-boot", boot_from=0)
    assert (from_source.rootdev_serial, from_source.root_uuid) == ("CLONEBAY-D0", source.root_uuid)
    assert from_source.hostname == from_clone.hostname == source.hostname  # names kept
