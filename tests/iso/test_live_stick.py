"""A stick made by ``clonebay make-stick`` (the live ISO and an exFAT images partition after it)
boots as a USB disk, no CD, under SeaBIOS and under UEFI (OVMF), once each: the live system comes
up on it, sees the images partition by its label and mounts it with its own kernel (reading a
file put there on the host through exfat-fuse)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.system.stick import IMAGES_LABEL
from tests.iso.conftest import blank
from tests.iso.qemu import OVMF_CODE, Guest, accel

BOOT_TIMEOUT = 600  # TCG on 2 cores: ~2 min
GIB = 1 << 30
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


@pytest.fixture(params=["bios", "uefi"])
def guest(
    request: pytest.FixtureRequest,
    stick: Path,
    live_iso: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guest]:
    """The stick as the only disk, a USB one (Guest's ``boot="usb"`` attaches its "ISO" so)."""
    firmware = str(request.param)
    if firmware == "uefi" and not OVMF_CODE.exists():
        pytest.skip(f"{OVMF_CODE} missing: apt-get install ovmf")
    accel(Path(str(live_iso) + ".boot") / "vmlinuz")  # decided on the ISO's kernel, then cached
    vm = Guest(workdir=tmp_path_factory.mktemp(firmware), iso=stick, firmware=firmware, boot="usb")
    vm.start()
    try:
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        vm.shell(BOOT_TIMEOUT)
        yield vm
    finally:
        vm.close()


def test_the_stick_boots_and_offers_its_images_partition(guest: Guest) -> None:
    uefi = guest.run("test -d /sys/firmware/efi")[0] == 0
    assert uefi == (guest.firmware == "uefi")
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
