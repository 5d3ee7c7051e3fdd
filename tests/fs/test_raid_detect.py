"""md RAID members and firmware RAID disks are recognised and explained, checked against
``mdadm --examine`` and ``blkid -p``. The metadata is written by tests/fs/raidmeta.py following the
specs (this kernel has no md driver, so ``mdadm --create`` cannot make arrays here); each test
first has both tools read it back, so it cannot pass on bytes they would not accept.

- md 0.90, 1.0, 1.2 members: the reason names the array, level, device count, this member's role
  and where the superblock is; a RAID1 member says what its data area holds (ext4 from byte 0 with
  a superblock at the end); a RAID5 member says it holds only part of the data; a bad checksum
  is said; a RAID1 member holding an LVM PV is an md member, not a PV.
- Intel RST (IMSM): ``raid_notes`` on the whole disk names the volume, its level and the member
  serials and says how to leave RAID mode; ``inspect_disk`` shows it among the disk's warnings.
- DDF: a valid anchor in the last sector is named; a damaged one is not.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from clonebay.engine.inspect import inspect_disk
from clonebay.fs.bios_raid import raid_notes
from clonebay.fs.probe import probe_volume
from clonebay.model import CopyMethod, Volume
from clonebay.system import loopdev
from clonebay.system.blockdev import BytesSource, FileSource
from clonebay.system.run import output, run
from clonebay.testdisks import ext as extdisk
from clonebay.testdisks.tree import Tree
from tests.fs.lvmdisks import loops, lvm
from tests.fs.raidmeta import (
    Array,
    ImsmVolume,
    imsm_mpb,
    md0_superblock,
    md1_superblock,
    write_imsm,
)

MiB = 1 << 20
SIZE = 32 * MiB
MIRROR = Array("host:mirror", bytes(range(16)), 1, 2, 1)


def _place(path: Path, offset: int, data: bytes, size: int = SIZE) -> Path:
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(size)
        os.pwrite(f.fileno(), data, offset)
    return path


def _examine(path: Path) -> dict[str, str]:
    text = output(["mdadm", "--examine", str(path)])
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(" : ") for ln in text.splitlines())}
    this = re.search(r"^this\s+\d+\s+\d+\s+\d+\s+(\d+)", text, re.M)  # 0.90: RaidDevice
    if this:
        fields["Device Role"] = f"Active device {this.group(1)}"
    return fields


def _blkid(path: Path) -> dict[str, str]:
    text = run(["blkid", "-p", "-o", "export", str(path)], check=False).stdout.decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _member(tmp_path: Path, version: str, array: Array, with_ext: bool) -> tuple[Path, int]:
    """A member file with ``array``'s superblock ``version``; (path, byte where data starts)."""
    path = tmp_path / f"md{version}.img"
    if version == "0.90":
        at, block = md0_superblock(array, SIZE)
        data = 0
    else:
        at, block = md1_superblock(array, version, SIZE, data_offset=2048)
        data = 0 if version == "1.0" else 2048 * 512
    if with_ext:
        tree = Tree(tmp_path / "files")
        tree.add_file("etc/hostname", b"mirror\n")
        image = extdisk.build_ext(tmp_path / "ext.img", 24 * MiB, tree, label="mirror")
        _place(path, data, image.read_bytes())
    return _place(path, at, block), data


def _probe(path: Path, type_id: str = "") -> Volume:
    with FileSource(str(path)) as src:
        return probe_volume(src, type_id)


@pytest.mark.parametrize("version", ["1.0", "1.2", "0.90"])
def test_raid1_member_says_array_role_and_what_it_holds(tmp_path: Path, version: str) -> None:
    path, data = _member(tmp_path, version, MIRROR, with_ext=True)
    examined, blkid = _examine(path), _blkid(path)
    assert blkid["TYPE"] == "linux_raid_member"
    assert (examined["Raid Level"], examined["Raid Devices"]) == ("raid1", "2")
    assert examined["Device Role"] == "Active device 1"
    assert "correct" in examined["Checksum"]
    volume = _probe(path)
    assert (volume.fstype, volume.copy, volume.used_bytes) == ("md-member", CopyMethod.RAW, SIZE)
    assert volume.uuid == examined.get("Array UUID", examined.get("UUID"))
    name = examined.get("Name", "md3")
    assert volume.label == name
    where = "at the end" if version in ("1.0", "0.90") else "at byte 4096"
    assert volume.reason.startswith(
        f"md RAID1 member of array {name} (2 devices; this is active device 1;"
        f" superblock {version} {where}; UUID {volume.uuid}): copied whole;"
        f" the array's ext4 'mirror' starts at byte {data}"
    ), volume.reason
    if data == 0:
        assert "a tool that ignores md" in volume.reason


def test_raid5_member_holds_part_of_the_data(tmp_path: Path) -> None:
    path, _ = _member(tmp_path, "1.2", Array("host:r5", bytes(range(16, 32)), 5, 4, 2), False)
    examined = _examine(path)
    assert (examined["Raid Level"], examined["Raid Devices"]) == ("raid5", "4")
    volume = _probe(path)
    assert "md RAID5 member of array host:r5 (4 devices; this is active device 2;" in volume.reason
    assert "holds only part of the data" in volume.reason


def test_bad_checksum_is_said(tmp_path: Path) -> None:
    path, _ = _member(tmp_path, "1.0", MIRROR, with_ext=False)
    at = md1_superblock(MIRROR, "1.0", SIZE)[0]
    _place(path, at + 200, b"\x99")  # events: inside the checksummed bytes
    assert "expected" in _examine(path)["Checksum"]
    volume = _probe(path)
    assert volume.fstype == "md-member" and "checksum is wrong" in volume.reason


def test_raid_partition_type_with_and_without_superblock(tmp_path: Path) -> None:
    path, _ = _member(tmp_path, "1.2", MIRROR, with_ext=False)
    assert _probe(path, "0xfd").fstype == "md-member"
    empty = probe_volume(BytesSource(bytes(SIZE)), "A19D880F-05FC-4D3B-A006-743F0F84911E")
    assert (empty.fstype, empty.reason) == ("container", "Linux RAID member")


def test_raid1_member_holding_a_pv_is_an_md_member(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("pvcreate needs a loop device")
    path = _place(tmp_path / "pvmd.img", 0, b"")
    with loops(path) as devices:
        lvm(devices, "pvcreate", "-q", "-ff", "-y", devices[0])
    assert _probe(path).fstype == "lvm2-pv"  # the PV alone is mapped as one
    _place(path, *md1_superblock(MIRROR, "1.0", SIZE))
    volume = _probe(path)
    assert (volume.fstype, volume.copy) == ("md-member", CopyMethod.RAW)
    assert "the array's lvm2-pv starts at byte 0" in volume.reason


def _rst_disk(tmp_path: Path, level: int, serials: list[str]) -> Path:
    """A 64 MiB disk: a GPT with one partition inside the RST volume's first 62 MiB, and the
    RST metadata in its last sectors."""
    path = tmp_path / "rst.img"
    _place(path, 0, b"", 62 * MiB)
    run(["sgdisk", "-n", "1:2048:+16M", "-t", "1:8300", str(path)])
    _place(path, 0, b"", 64 * MiB)
    volume = ImsmVolume("Vol0", level, 62 * MiB // 512)
    write_imsm(str(path), imsm_mpb(serials, volume, 64 * MiB // 512))
    return path


def _examine_imsm(path: Path) -> str:
    dev = loopdev.attach(str(path), read_only=True)
    try:
        env = {"IMSM_NO_PLATFORM": "1", "IMSM_DEVNAME_AS_SERIAL": "1"}
        return output(["mdadm", "--examine", dev], env=env)
    finally:
        loopdev.detach(dev)


@pytest.mark.skipif(os.geteuid() != 0, reason="mdadm reads IMSM from block devices only")
def test_intel_rst_raid1_member_is_explained(tmp_path: Path) -> None:
    path = _rst_disk(tmp_path, 1, ["WD-AAA111", "WD-BBB222"])
    examined = _examine_imsm(path)
    assert "[Vol0]:" in examined and re.search(r"RAID Level : 1\b", examined)
    assert "Checksum : " in examined and "correct" in examined
    assert _blkid(path)["TYPE"] == "isw_raid_member"
    with FileSource(str(path)) as disk:
        notes = raid_notes(disk)
    text = "\n".join(notes)
    assert "this disk is a member of an Intel RST RAID volume" in notes[0]
    assert "RAID1 volume 'Vol0' of 62.0 MiB over 2 disks" in notes[0]
    assert "WD-AAA111, WD-BBB222" in notes[0]
    assert "clonebay sees each member disk separately" in text
    assert "each member holds a whole copy" in text and "striped" not in text
    assert "switch SATA mode from RAID to AHCI only after" in text
    report = inspect_disk(str(path))
    assert set(notes) <= set(report.warnings)
    assert report.table.kind == "gpt" and len(report.partitions) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mdadm reads IMSM from block devices only")
def test_intel_rst_raid0_says_no_member_holds_the_volume(tmp_path: Path) -> None:
    path = _rst_disk(tmp_path, 0, ["S1", "S2"])
    assert re.search(r"RAID Level : 0\b", _examine_imsm(path))
    with FileSource(str(path)) as disk:
        text = "\n".join(raid_notes(disk))
    assert "RAID0 volume 'Vol0' of 124.0 MiB over 2 disks" in text
    assert "no member alone holds its partitions" in text
    assert "a striped volume cannot be read until RAID mode is set again" in text


def test_damaged_rst_metadata_and_plain_disks_have_no_notes(tmp_path: Path) -> None:
    path = _rst_disk(tmp_path, 1, ["S1", "S2"])
    _place(path, 64 * MiB - 1024 + 0x30, b"\x01", 64 * MiB)  # inside the checksummed block
    with FileSource(str(path)) as disk:
        assert raid_notes(disk) == ()
    assert raid_notes(BytesSource(bytes(4 * MiB))) == ()
    assert not any("RAID" in w for w in inspect_disk(str(path)).warnings)


def _ddf_anchor(vendor: bytes, crc_ok: bool = True) -> bytes:
    """A DDF anchor header (SNIA DDF 2.0; big-endian) with mdadm's CRC."""
    anchor = bytearray(b"\xff" * 512)
    struct.pack_into(">II24s8sII", anchor, 0, 0xDE11DE11, 0xFFFFFFFF,
                     vendor.ljust(8) + bytes(range(16)), b"01.02.00", 1, 0)  # fmt: skip
    crc = zlib.crc32(bytes(anchor), 0xFFFFFFFF) ^ 0xFFFFFFFF
    struct.pack_into(">I", anchor, 4, crc if crc_ok else crc ^ 1)
    return bytes(anchor)


def test_ddf_anchor_is_named() -> None:
    disk = bytearray(4 * MiB)
    disk[-512:] = _ddf_anchor(b"ACME")
    (first, second) = raid_notes(BytesSource(bytes(disk)))
    assert "SNIA DDF format (revision 01.02.00, written by 'ACME'" in first
    assert "clonebay sees each member disk separately" in second
    disk[-512:] = _ddf_anchor(b"ACME", crc_ok=False)
    assert raid_notes(BytesSource(bytes(disk))) == ()


def test_mdadm_is_there() -> None:
    """The oracles above need mdadm (Makefile APT_PACKAGES); say so plainly when it is missing."""
    proc = subprocess.run(["mdadm", "--version"], capture_output=True, check=False)
    assert proc.returncode == 0
