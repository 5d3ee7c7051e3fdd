"""RAID metadata written by hand, following the specs, for the detection tests.

The test machine's kernel has no md driver, so ``mdadm --create`` cannot make arrays here (it
fails opening /dev/md127), for md or for Intel RST (IMSM) containers. These builders write the
same bytes mdadm would, from the layouts in the kernel's include/uapi/linux/raid/md_p.h and
mdadm's super0.c, super1.c and super-intel.c; every test then has ``mdadm --examine`` and
``blkid -p`` read them back, so a builder that wrote something else fails there first.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass

MD_MAGIC = 0xA92B4EFC
SB1 = struct.Struct("<IIII16s32sQiIQIIiIQiIIIQQQQII16sBBHiQQQII32x")
SB1_CSUM_AT = 216
CONFIGURED_DISK = 0x2  # imsm_disk.status: a member of some RAID volume


def _fold(total: int) -> int:
    return ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF


@dataclass(frozen=True)
class Array:
    """What the superblock of one member says."""

    name: str
    uuid: bytes  # 16 bytes
    level: int
    raid_disks: int
    role: int  # this member's slot


def md1_superblock(
    array: Array, version: str, member_size: int, data_offset: int = 0
) -> tuple[int, bytes]:
    """(byte offset, 4 KiB block) of a version 1.0, 1.1 or 1.2 superblock of ``array``."""
    sectors = member_size // 512
    if version == "1.0":
        super_offset = (sectors - 16) & ~7
        data_offset, data_size = 0, super_offset
    else:
        super_offset = {"1.1": 0, "1.2": 8}[version]
        data_size = sectors - data_offset
    max_dev = 128
    fields = [
        MD_MAGIC, 1, 0, 0, array.uuid, array.name.encode().ljust(32, b"\0"),
        1_700_000_000, array.level, 0 if array.level == 1 else 2, data_size,
        0 if array.level == 1 else 128, array.raid_disks, 0, 0, 0, 0, 0, 0, 0,
        data_offset, data_size, super_offset, 0, array.role, 0,
        uuidlib.UUID(int=array.role + 1).bytes, 0, 0, 0, 0,
        1_700_000_100, 7, 2**64 - 1, 0, max_dev,
    ]  # fmt: skip
    roles = [0xFFFF] * max_dev
    roles[array.role] = array.role
    block = bytearray(4096)
    SB1.pack_into(block, 0, *fields)
    struct.pack_into(f"<{max_dev}H", block, 256, *roles)
    size = 256 + max_dev * 2
    total = sum(struct.unpack_from(f"<{size // 4}I", block))
    struct.pack_into("<I", block, SB1_CSUM_AT, _fold(total))
    return super_offset * 512, bytes(block)


def md0_superblock(array: Array, member_size: int, md_minor: int = 3) -> tuple[int, bytes]:
    """(byte offset, 4 KiB block) of a version 0.90 superblock (little-endian) of ``array``."""
    offset = (member_size & ~0xFFFF) - 0x10000
    words = [0] * 1024
    u = struct.unpack("<4I", array.uuid)
    words[0:16] = [MD_MAGIC, 0, 90, 0, 0, u[0], 1_700_000_000, array.level & 0xFFFFFFFF,
                   offset // 1024, array.raid_disks, array.raid_disks, md_minor, 0, u[1], u[2],
                   u[3]]  # fmt: skip
    words[32:38] = [1_700_000_100, 1, array.raid_disks, array.raid_disks, 0, 0]
    words[40] = 7  # events_lo
    for slot in range(array.raid_disks):  # disks[slot]: number, major, minor, raid_disk, state
        words[32 * (4 + slot) : 32 * (4 + slot) + 5] = [slot, 0, 0, slot, 6]  # active, sync
    words[992:997] = [array.role, 0, 0, array.role, 6]
    words[38] = _fold(sum(words))
    return offset, struct.pack("<1024I", *words)


@dataclass(frozen=True)
class ImsmVolume:
    name: str
    level: int
    blocks_per_member: int  # sectors


def imsm_mpb(serials: list[str], volume: ImsmVolume, disk_sectors: int) -> bytes:
    """An Intel RST metadata block for disks ``serials`` holding one ``volume``, padded to
    whole sectors: it goes at the disk's second-last sector (and, when longer, before it)."""
    members = len(serials)
    low, high = disk_sectors & 0xFFFFFFFF, disk_sectors >> 32
    disks = b"".join(
        struct.pack("<16sIIIII12x", s.encode(), low, 0, CONFIGURED_DISK, 0, high) for s in serials
    )
    data_stripes = volume.blocks_per_member // 128
    size = volume.blocks_per_member * (members if volume.level == 0 else 1)
    table = struct.pack(f"<{members}I", *range(members))
    domains = 2 if volume.level == 1 else 1
    imap = struct.pack("<IIIHBBBBBBIII16x", 0, volume.blocks_per_member, data_stripes, 128, 0,
                       volume.level, members, domains, 0xFF, 1, 0, 0, 0)  # fmt: skip
    vol = struct.pack("<IIBBBBHHI12x", 0, 0, 0, 0, 0, 0xFF, 0, 0, 0)
    dev = struct.pack("<16sIIII", volume.name.encode(), size & 0xFFFFFFFF, size >> 32, 0, 0)
    dev = dev.ljust(80, b"\0") + vol + imap + table
    mpb_size = 0xD8 + len(disks) + len(dev)
    head = struct.pack("<32sIIIIIIBBBBI", b"Intel Raid ISM Cfg Sig. 1.1.00", 0, mpb_size,
                       0x1234_5678, 1, 0, 0, members, 1, 0, 0, 0)  # fmt: skip
    mpb = bytearray(head.ljust(0xD8, b"\0") + disks + dev)
    struct.pack_into("<I", mpb, 32, sum(struct.unpack_from(f"<{mpb_size // 4}I", mpb)) & 0xFFFFFFFF)
    return bytes(mpb)


def write_imsm(path: str, mpb: bytes) -> None:
    """Put ``mpb`` where the RST option ROM keeps it: its first sector in the disk's second-last
    sector, the sectors after the first just before that one (mdadm load_imsm_mpb)."""
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        sectors = -(-len(mpb) // 512)
        padded = mpb.ljust(sectors * 512, b"\0")
        f.seek(size - 1024)
        f.write(padded[:512])
        if sectors > 1:
            f.seek(size - 512 * (2 + sectors - 1))
            f.write(padded[512:])
