"""A Windows-on-MBR disk for host tests of the post-copy pass (no boot): a "System Reserved"
NTFS partition with \\Boot\\BCD and BOOTSECT.BAK, and a Windows NTFS partition with the
SYSTEM, SOFTWARE and SAM hives (tests/postcopy/hives.py builds them with hivex). The BCD's
boot manager names p1 by (signature, offset), its OS loader names p2, and MountedDevices maps
C: to p2 and a volume GUID to p1, with one value of another disk that must stay as it is."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.postcopy import hives
from tests.postcopy.minidisk import put, sh

MiB = 1 << 20
SIGNATURE = 0x1234ABCD
OTHER_DISK = (0xDEADBEEF, 1 * MiB)
P1_START, P1_SIZE = 1 * MiB, 64 * MiB
P2_START, P2_SIZE = 65 * MiB, 96 * MiB
DISK_SIZE = 162 * MiB
LOADER_GUID = "{6b3c1a42-0a1f-11ee-9a3e-8e0ab1c2d3e4}"


@dataclass(frozen=True)
class WinDisk:
    path: Path


def _ntfs(path: Path, size: int, start: int, label: str, fill: dict[str, Path]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    sh(
        "mkntfs",
        "-q",
        "-F",
        "-f",
        "-L",
        label,
        "-p",
        str(start // 512),
        "-H",
        "255",
        "-S",
        "63",
        str(path),
    )
    mnt = path.with_suffix(".mnt")
    mnt.mkdir()
    sh("ntfs-3g", str(path), str(mnt))
    try:
        for rel, src in fill.items():
            dest = mnt / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
    finally:
        sh("umount", str(mnt))
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                ["pgrep", "-f", f"ntfs-3g {path}"], capture_output=True, check=False
            ).returncode
            == 0
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("ntfs-3g did not exit")
            time.sleep(0.1)
        mnt.rmdir()


def boot_sector_copy(start: int) -> bytes:
    """A BOOTSECT.BAK as bootsect.exe leaves it: an NTFS boot sector naming ``start``."""
    sector = bytearray(512)
    sector[0:3] = b"\xebR\x90"
    sector[3:11] = b"NTFS    "
    struct.pack_into("<H", sector, 0x0B, 512)
    struct.pack_into("<I", sector, 0x1C, start // 512)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def build(path: Path, work: Path) -> WinDisk:
    work.mkdir(parents=True, exist_ok=True)
    bcd = hives.bcd_hive(
        work / "BCD",
        [
            hives.BcdObject(
                hives.BOOTMGR_ID,
                hives.BOOTMGR_TYPE,
                {
                    "11000001": hives.bcd_mbr_device(SIGNATURE, P1_START),
                    "12000004": "Windows Boot Manager",
                },
            ),
            hives.BcdObject(
                LOADER_GUID,
                hives.OSLOADER_TYPE,
                {
                    "11000001": hives.bcd_mbr_device(SIGNATURE, P2_START),
                    "21000001": hives.bcd_mbr_device(SIGNATURE, P2_START),
                    "12000004": "Windows 10",
                },
            ),
        ],
    )
    system = hives.system_hive(
        work / "SYSTEM",
        computer_name="OLDPC",
        generalization_state=7,
        mounted={
            "\\DosDevices\\C:": hives.mounted_device(SIGNATURE, P2_START),
            "\\??\\Volume{0d1c2b3a-0000-0000-0000-100000000000}": hives.mounted_device(
                SIGNATURE, P1_START
            ),
            "\\DosDevices\\E:": hives.mounted_device(*OTHER_DISK),
        },
    )
    software = hives.software_hive(work / "SOFTWARE", "IMAGE_STATE_COMPLETE")
    sam = hives.sam_hive(work / "SAM", (1111, 2222, 3333))
    bak = work / "BOOTSECT.BAK"
    bak.write_bytes(boot_sector_copy(P1_START))
    p1, p2 = work / "p1.img", work / "p2.img"
    _ntfs(p1, P1_SIZE, P1_START, "System Reserved", {"Boot/BCD": bcd, "BOOTSECT.BAK": bak})
    config = "Windows/System32/config"
    _ntfs(
        p2,
        P2_SIZE,
        P2_START,
        "Windows",
        {f"{config}/SYSTEM": system, f"{config}/SOFTWARE": software, f"{config}/SAM": sam},
    )
    with open(path, "wb") as f:
        f.truncate(DISK_SIZE)
    layout = (
        f"label: dos\nlabel-id: 0x{SIGNATURE:08x}\n"
        f"start={P1_START // 512}, size={P1_SIZE // 512}, type=7, bootable\n"
        f"start={P2_START // 512}, size={P2_SIZE // 512}, type=7\n"
    )
    sh("sfdisk", "-q", str(path), stdin=layout.encode())
    for image, start in ((p1, P1_START), (p2, P2_START)):
        put(image, path, start)
    return WinDisk(path)


def ntfs_file(disk: Path, start: int, size: int, rel: str, out: Path) -> Path:
    """A file of the NTFS volume at ``start``, read with ntfscat (not ntfs-3g, not clonebay)."""
    dev = sh(
        "losetup",
        "--find",
        "--show",
        "--read-only",
        "--offset",
        str(start),
        "--sizelimit",
        str(size),
        str(disk),
    ).strip()
    try:
        data = subprocess.run(["ntfscat", "-f", dev, rel], check=True, capture_output=True).stdout
    finally:
        sh("losetup", "-d", dev)
    out.write_bytes(data)
    return out
