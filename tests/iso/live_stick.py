"""The stick a technician makes with ``clonebay make-stick``: the live ISO's bytes and an exFAT
images partition after it (p3, labelled IMAGES_LABEL), as a sparse image file for QEMU to boot
as a USB disk. Made once per session (tests/iso/conftest.py) and booted by two guests: the
stores guest under SeaBIOS, which also saves into its images partition, and the Secure Boot
guest under UEFI (tests/iso/test_live_stick.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from clonebay.system.stick import IMAGES_LABEL
from tests.iso.qemu import Guest

# a file put into the images partition on the host (exfat-fuse), read back by the live system
NOTE = b"made on the host, read by the live system\n"


def make_stick(iso: Path, image: Path) -> Path:
    """``image`` (a blank file, the stick's size) made a stick: make-stick of ``iso`` through a
    loop device, plus NOTE in the images partition (written with exfat-fuse: the host kernel
    may have no exFAT driver). Beside it, IMAGE.boot is the ISO's .boot folder: the stick boots
    the ISO's own kernel, which is what the QEMU harness tries KVM with."""
    Path(f"{image}.boot").symlink_to(Path(f"{iso}.boot").resolve())
    dev = subprocess.check_output(["losetup", "-f", "--show", str(image)], text=True).strip()
    mnt = image.parent / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "clonebay", "make-stick", str(iso), dev, "--yes"],
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


def offers_its_images_partition(guest: Guest) -> None:
    """The guest booted from the stick (serial CLONEBAY-LIVE): it is the live medium, mounted
    from its ISO partition; its images partition is found by label as p3, exFAT, and the live
    kernel's own driver reads the host's NOTE from it."""
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
